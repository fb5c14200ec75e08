-- Shared plumbing: operator tokens, the hash-chained audit log and the double-entry ledger.

CREATE TABLE admin_tokens (
    token_hash   bytea PRIMARY KEY,          -- SHA-256 of the bearer token; the token itself is never stored
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('operator', 'auditor')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE audit_log (
    seq          bigint PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text NOT NULL,
    action       text NOT NULL,
    subject      text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL UNIQUE
);

-- Append-only: updates and deletes are refused by the database itself.
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();

CREATE TABLE ledger_accounts (
    account      text PRIMARY KEY,           -- e.g. campaign:<id>:budget
    campaign_id  text,
    kind         text NOT NULL,              -- funding | budget | allocated | issued | redeemed | reclaimed | ...
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_transactions (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,              -- what caused it: campaign.fund, packet.allocate, ...
    ref          text NOT NULL,              -- the business key; (kind, ref) makes a posting idempotent
    campaign_id  text,
    at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref)
);

CREATE TABLE ledger_entries (
    txn_id       bigint NOT NULL REFERENCES ledger_transactions (id),
    account      text NOT NULL REFERENCES ledger_accounts (account),
    amount_fen   bigint NOT NULL CHECK (amount_fen <> 0),  -- debit positive, credit negative
    PRIMARY KEY (txn_id, account)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account);

-- Refuse edits of posted money: corrections are new postings.
CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only';
END $$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_transactions_no_update BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
