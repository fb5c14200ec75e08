-- Red packets and their issuance outbox.
--
-- A packet is created per winner by the draw's hand-over (state 'allocated', ledger budget ->
-- allocated) and changes state only by compare-and-set updates. The outbox holds one row per
-- attempt to credit a packet to a wallet; it is written in the transaction that binds the
-- wallet, so a committed claim is never without its work item.

CREATE TABLE packets (
    id                  bigserial PRIMARY KEY,
    campaign_id         text NOT NULL REFERENCES campaigns (id),
    ticket              bigint NOT NULL,
    tier                text NOT NULL,
    amount_fen          bigint NOT NULL CHECK (amount_fen > 0),
    state               text NOT NULL DEFAULT 'allocated' CHECK (state IN (
                            'allocated', 'issuing', 'issued', 'failed', 'cancelled',
                            'reclaimed', 'spent')),
    -- The wallet the citizen gave at registration, for bulk issuance by the operator.
    registered_bank     text,
    registered_wallet   text,
    -- The wallet this packet is being (or was) credited to.
    wallet_bank         text,
    wallet_id           text,
    claimed_at          timestamptz,
    issued_at           timestamptz,
    credit_id           text,
    -- Why the last credit was refused; the banks that refused one, asked again before a re-claim
    -- at another bank so a late success there is found instead of crediting twice.
    failure_code        text,
    failed_at           timestamptz,
    refused_by          text[] NOT NULL DEFAULT '{}',
    spent_fen           bigint NOT NULL DEFAULT 0 CHECK (spent_fen >= 0),
    reclaimed_fen       bigint NOT NULL DEFAULT 0 CHECK (reclaimed_fen >= 0),
    closed_at           timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, ticket),
    CHECK (spent_fen + reclaimed_fen <= amount_fen),
    CHECK (state IN ('allocated', 'cancelled') OR (wallet_bank IS NOT NULL AND wallet_id IS NOT NULL))
) WITH (fillfactor = 80);  -- room on each page keeps the issuance updates heap-only (no index churn)

CREATE TABLE issuance_outbox (
    id              bigserial PRIMARY KEY,
    packet_id       bigint NOT NULL REFERENCES packets (id),
    campaign_id     text NOT NULL,
    bank_code       text NOT NULL,
    not_before      timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,      -- last time the dispatcher put it on the bank's stream
    publish_count   integer NOT NULL DEFAULT 0,
    stream_entry    text,             -- the stream entry that carries it (for loss detection)
    done_at         timestamptz,      -- the packet reached an outcome; nothing more to do
    dead_at         timestamptz,      -- parked in the dead-letter stream for an operator
    dead_reason     text
) WITH (fillfactor = 85);
-- One open work item per packet: a repeated claim adds nothing.
CREATE UNIQUE INDEX issuance_outbox_open_packet ON issuance_outbox (packet_id) WHERE done_at IS NULL;
-- What the dispatcher publishes next, and what is on a stream now.
CREATE INDEX issuance_outbox_unpublished ON issuance_outbox (bank_code, id)
    WHERE done_at IS NULL AND dead_at IS NULL AND published_at IS NULL;
CREATE INDEX issuance_outbox_in_flight ON issuance_outbox (bank_code, published_at)
    WHERE done_at IS NULL AND dead_at IS NULL AND published_at IS NOT NULL;
CREATE INDEX issuance_outbox_dead ON issuance_outbox (campaign_id) WHERE dead_at IS NOT NULL AND done_at IS NULL;
