-- Merchants, the campaigns' acceptance rules, and the redemption notices merchants send.
--
-- A notice is stored once per (merchant, merchant transaction id) and acknowledged as 'pending';
-- the reconciler later matches it with a bank settlement line. Money moves in the ledger
-- (issued -> redeemed) only on a match, never on a notice alone.

CREATE TABLE merchants (
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name                text NOT NULL,
    category            text NOT NULL CHECK (category ~ '^[0-9]{4}$'),   -- ISO 18245 MCC
    district            text NOT NULL,
    settlement_account  text NOT NULL,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- Ed25519 public key the merchant signs requests with; the private half is shown once.
    public_key          bytea NOT NULL CHECK (length(public_key) = 32),
    key_id              text NOT NULL UNIQUE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchants_district_category ON merchants (district, category);

-- Where a campaign's packets may be spent; no row of a kind means no restriction of that kind.
CREATE TABLE campaign_acceptance (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    kind         text NOT NULL CHECK (kind IN ('category', 'district')),
    value        text NOT NULL,
    PRIMARY KEY (campaign_id, kind, value)
);

CREATE TABLE redemption_notices (
    id               bigserial PRIMARY KEY,
    merchant_id      text NOT NULL REFERENCES merchants (id),
    merchant_txn_id  text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('payment', 'reversal')),
    -- For a reversal: the merchant transaction id of the payment it refunds.
    reverses_txn_id  text,
    campaign_id      text NOT NULL REFERENCES campaigns (id),
    packet_id        bigint NOT NULL REFERENCES packets (id),
    bank_code        text NOT NULL,
    -- The packet's reference at its bank (the credit's idempotency key, shown by the wallet).
    payment_reference text NOT NULL,
    -- The bank's id of this spend (settlement line `spend_id`) when the merchant has it.
    bank_reference   text,
    amount_fen       bigint NOT NULL CHECK (amount_fen > 0),
    -- What the customer's whole basket cost, when the merchant reports it (consumption multiplier).
    basket_fen       bigint CHECK (basket_fen IS NULL OR basket_fen >= amount_fen),
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- SHA-256 of the canonical payload: the same txn id with another payload is a conflict.
    payload_hash     bytea NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'matched', 'break')),
    UNIQUE (merchant_id, merchant_txn_id),
    CHECK ((kind = 'reversal') = (reverses_txn_id IS NOT NULL))
);
CREATE INDEX redemption_notices_pending ON redemption_notices (id) WHERE status = 'pending';
CREATE INDEX redemption_notices_bank_reference ON redemption_notices (bank_code, bank_reference)
    WHERE bank_reference IS NOT NULL;
CREATE INDEX redemption_notices_packet ON redemption_notices (packet_id);
CREATE INDEX redemption_notices_campaign ON redemption_notices (campaign_id, occurred_at);
