-- The draw's evidence: ceremony, committed list and tree, beacon, results, outbox.

-- When registration actually closed (an operator may close before the declared time).
ALTER TABLE campaigns ADD COLUMN closed_at timestamptz;

CREATE TABLE ceremony_commitments (
    campaign_id     text NOT NULL REFERENCES campaigns (id),
    participant_id  text NOT NULL,
    commitment      bytea NOT NULL CHECK (length(commitment) = 32),
    signature       bytea NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (campaign_id, participant_id)
);

CREATE TABLE ceremony_reveals (
    campaign_id     text NOT NULL,
    participant_id  text NOT NULL,
    secret          bytea NOT NULL,
    signature       bytea NOT NULL,
    revealed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (campaign_id, participant_id),
    FOREIGN KEY (campaign_id, participant_id) REFERENCES ceremony_commitments (campaign_id, participant_id)
);

-- The registrations as committed: leaf_index is the position in the Merkle tree (ticket order).
CREATE TABLE committed_registrants (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    leaf_index   bigint NOT NULL,
    ticket       bigint NOT NULL,
    pseudonym    text NOT NULL,
    stratum      text NOT NULL,
    PRIMARY KEY (campaign_id, leaf_index)
);
CREATE UNIQUE INDEX committed_registrants_ticket ON committed_registrants (campaign_id, ticket);

CREATE TABLE commitments (
    campaign_id   text PRIMARY KEY REFERENCES campaigns (id),
    tree_size     bigint NOT NULL,
    root          bytea NOT NULL,
    committed_at  timestamptz NOT NULL,
    key_id        text NOT NULL,
    statement     bytea NOT NULL,   -- the exact bytes signed
    signature     bytea NOT NULL,
    approval_id   bigint REFERENCES approvals (id)
);

-- Every level of the tree in chunks, so any inclusion proof is a handful of substring reads.
CREATE TABLE merkle_chunks (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    level        integer NOT NULL,
    chunk        integer NOT NULL,
    nodes        bytea NOT NULL,
    PRIMARY KEY (campaign_id, level, chunk)
);

CREATE TABLE beacons (
    campaign_id   text PRIMARY KEY REFERENCES campaigns (id),
    kind          text NOT NULL,
    round         bigint NOT NULL,
    signature     bytea NOT NULL,
    randomness    bytea NOT NULL,
    record        jsonb NOT NULL,   -- the bundle's beacon section
    recorded_by   text NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE draws (
    campaign_id    text PRIMARY KEY REFERENCES campaigns (id),
    algorithm      text NOT NULL,
    seed           bytea NOT NULL,
    winners_root   bytea NOT NULL,
    winner_count   integer NOT NULL,
    strata         jsonb NOT NULL,   -- the bundle's per-stratum results and the spill-over
    bundle         bytea NOT NULL,   -- the signed file, byte for byte as published
    drawn_at       timestamptz NOT NULL,
    requested_by   text NOT NULL,
    approved_by    text NOT NULL
);

CREATE TABLE draw_winners (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    ticket       bigint NOT NULL,
    stratum      text NOT NULL,
    tier         text NOT NULL,
    amount_fen   bigint NOT NULL CHECK (amount_fen > 0),
    round        smallint NOT NULL,
    rank_key     bytea NOT NULL,
    PRIMARY KEY (campaign_id, ticket)
);

-- Messages to citizens, written in the transaction that decides them and delivered afterwards.
CREATE TABLE notification_outbox (
    id           bigserial PRIMARY KEY,
    campaign_id  text NOT NULL,
    ticket       bigint NOT NULL,
    channel      text NOT NULL,
    recipient    text NOT NULL,    -- the identity provider's handle for the citizen, never a phone number
    body         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    sent_at      timestamptz,
    UNIQUE (campaign_id, ticket, channel)
);
CREATE INDEX notification_outbox_unsent ON notification_outbox (id) WHERE sent_at IS NULL;

-- What the sandbox SMS gateway received (sandbox mode only).
CREATE TABLE sandbox_sms (
    id           bigserial PRIMARY KEY,
    recipient    text NOT NULL,
    body         text NOT NULL,
    outbox_id    bigint NOT NULL UNIQUE,
    received_at  timestamptz NOT NULL DEFAULT now()
);
