-- Leases: who leads a singleton (the issuance dispatcher, a campaign's expiry, a reconciliation
-- run), held by renewing a row rather than by a session advisory lock, so it survives a
-- transaction-mode connection pooler and a killed holder is replaced once its lease expires.
-- All times are the database's clock, so the holders' clocks never matter.
CREATE TABLE leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    term        bigint NOT NULL DEFAULT 1,      -- +1 at every change of holder
    taken_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    renewed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL
);
