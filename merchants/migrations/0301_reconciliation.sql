-- The banks' settlement files and their reconciliation with the merchants' notices.
--
-- A file is stored once (by its SHA-256 per bank); its good lines go to settlement_lines, its bad
-- lines to settlement_rejects with their line numbers, never dropped. The reconciler pairs a
-- notice with a line (reconciliation_matches) or records a break with its class; the ledger moves
-- issued -> redeemed only with a match, in the match's transaction.

CREATE TABLE settlement_files (
    id               bigserial PRIMARY KEY,
    bank_code        text NOT NULL,
    settlement_date  date NOT NULL,
    sha256           bytea NOT NULL CHECK (length(sha256) = 32),
    format           text NOT NULL CHECK (format IN ('ndjson', 'csv')),
    source           text NOT NULL CHECK (source IN ('fetched', 'uploaded')),
    -- The bank's trailer says the day is closed: no more lines will come for it.
    complete         boolean NOT NULL,
    line_count       integer NOT NULL,
    total_fen        bigint NOT NULL,
    rejected_count   integer NOT NULL DEFAULT 0,
    imported_at      timestamptz NOT NULL DEFAULT now(),
    imported_by      text NOT NULL,
    UNIQUE (bank_code, sha256)
);
CREATE INDEX settlement_files_day ON settlement_files (bank_code, settlement_date);

CREATE TABLE settlement_lines (
    id                bigserial PRIMARY KEY,
    file_id           bigint NOT NULL REFERENCES settlement_files (id),
    line_no           integer NOT NULL,
    bank_code         text NOT NULL,
    settlement_date   date NOT NULL,
    spend_id          text NOT NULL,          -- the bank's reference of the payment
    payment_reference text NOT NULL,          -- the packet's credit key (pkt-...)
    merchant_id       text NOT NULL,
    amount_fen        bigint NOT NULL CHECK (amount_fen > 0),
    settled_at        timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'matched', 'break')),
    UNIQUE (file_id, line_no)
);
-- A day's file may be re-sent with more lines: the same spend in two files is one line twice.
CREATE INDEX settlement_lines_spend ON settlement_lines (bank_code, spend_id);
CREATE INDEX settlement_lines_open ON settlement_lines (id) WHERE status = 'open';
CREATE INDEX settlement_lines_fallback ON settlement_lines (merchant_id, payment_reference, amount_fen);

CREATE TABLE settlement_rejects (
    file_id   bigint NOT NULL REFERENCES settlement_files (id),
    line_no   integer NOT NULL,
    raw       text NOT NULL,
    error     text NOT NULL,
    PRIMARY KEY (file_id, line_no)
);

CREATE TABLE reconciliation_runs (
    id           bigserial PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    -- incomplete (inputs missing) | breaks | reconciled-with-pending | reconciled
    outcome      text CHECK (outcome IN ('incomplete', 'breaks', 'reconciled-with-pending', 'reconciled')),
    counts       jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE reconciliation_matches (
    notice_id   bigint PRIMARY KEY REFERENCES redemption_notices (id),
    line_id     bigint NOT NULL UNIQUE REFERENCES settlement_lines (id),
    run_id      bigint NOT NULL REFERENCES reconciliation_runs (id),
    -- how: by the bank reference, or by merchant + packet + amount + time window
    matched_by  text NOT NULL CHECK (matched_by IN ('reference', 'fallback')),
    late        boolean NOT NULL DEFAULT false,   -- matched after its day's cut-off
    amount_fen  bigint NOT NULL,
    matched_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE reconciliation_breaks (
    id           bigserial PRIMARY KEY,
    class        text NOT NULL CHECK (class IN ('missing_at_bank', 'missing_at_merchant', 'amount_mismatch',
                                                'duplicate', 'late')),
    notice_id    bigint REFERENCES redemption_notices (id),
    line_id      bigint REFERENCES settlement_lines (id),
    campaign_id  text,
    merchant_id  text,
    amount_fen   bigint,
    detail       jsonb NOT NULL DEFAULT '{}',
    run_id       bigint NOT NULL REFERENCES reconciliation_runs (id),
    found_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_at  timestamptz,
    resolved_by  text,
    resolution   text,
    CHECK (notice_id IS NOT NULL OR line_id IS NOT NULL),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
-- One open break per notice and per line of a class: re-runs find it, not add it again.
CREATE UNIQUE INDEX reconciliation_breaks_notice ON reconciliation_breaks (class, notice_id) WHERE notice_id IS NOT NULL;
CREATE UNIQUE INDEX reconciliation_breaks_line ON reconciliation_breaks (class, line_id)
    WHERE line_id IS NOT NULL AND notice_id IS NULL;
CREATE INDEX reconciliation_breaks_open ON reconciliation_breaks (campaign_id, class) WHERE resolved_at IS NULL;

-- A bank's day once reconciled never changes; later lines for it land in the next run's day.
CREATE TABLE reconciled_days (
    bank_code        text NOT NULL,
    settlement_date  date NOT NULL,
    run_id           bigint NOT NULL REFERENCES reconciliation_runs (id),
    reconciled_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (bank_code, settlement_date)
);
