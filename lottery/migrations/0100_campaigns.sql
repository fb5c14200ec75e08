-- Campaigns and citizen registrations.

CREATE TABLE campaigns (
    id                      text PRIMARY KEY,
    name                    text NOT NULL,
    state                   text NOT NULL DEFAULT 'draft',
    budget_fen              bigint NOT NULL CHECK (budget_fen > 0),
    tiers                   jsonb NOT NULL,
    strata                  jsonb NOT NULL,
    registration_opens_at   timestamptz NOT NULL,
    registration_closes_at  timestamptz NOT NULL,
    claim_deadline          timestamptz NOT NULL,
    spending_deadline       timestamptz NOT NULL,
    beacon                  jsonb NOT NULL,
    participants            jsonb NOT NULL,
    eligibility             jsonb NOT NULL,
    draw_rules              jsonb NOT NULL,
    pseudonym_key           bytea NOT NULL,   -- per-campaign key: pseudonyms never reveal the dedupe HMAC
    created_by              text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (registration_opens_at < registration_closes_at),
    CHECK (registration_closes_at <= claim_deadline),
    CHECK (claim_deadline <= spending_deadline)
);

CREATE SEQUENCE registration_tickets AS bigint START 1 CACHE 1;

CREATE TABLE registrations (
    campaign_id     text NOT NULL REFERENCES campaigns (id),
    ticket          bigint NOT NULL DEFAULT nextval('registration_tickets'),
    id_hmac         bytea NOT NULL,            -- HMAC-SHA256(pepper, normalised resident ID)
    pseudonym       text NOT NULL,
    stratum         text NOT NULL,
    payload_hash    bytea NOT NULL,            -- what the citizen asked for, to tell a retry from a change
    wallet_bank     text,
    wallet_id       text,
    registered_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    withdrawn_at    timestamptz,
    PRIMARY KEY (campaign_id, ticket)
);
-- One live registration per person per campaign; a withdrawn one does not block a new one.
CREATE UNIQUE INDEX registrations_one_per_person
    ON registrations (campaign_id, id_hmac) WHERE withdrawn_at IS NULL;

CREATE TABLE ineligible_attempts (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    code         text NOT NULL,
    attempts     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, code)
);
