-- Until when a settlement file vouches for the bank's spends: the end of its day when the bank
-- says the day is complete, otherwise the moment it was fetched (or its last line, when uploaded).
-- A notice is missing at the bank only once a file covers its moment, so an intraday file never
-- turns spends the bank has yet to list into breaks.
ALTER TABLE settlement_files ADD COLUMN covers_until timestamptz;
UPDATE settlement_files SET covers_until = imported_at WHERE covers_until IS NULL;
ALTER TABLE settlement_files ALTER COLUMN covers_until SET NOT NULL;
CREATE INDEX settlement_files_coverage ON settlement_files (bank_code, covers_until);

-- Lines a later file of the same day lists again, unchanged, are counted here, not stored twice.
ALTER TABLE settlement_files ADD COLUMN repeated_count integer NOT NULL DEFAULT 0;

-- Notices still waiting for a settlement line, by when they happened (coverage checks).
CREATE INDEX redemption_notices_pending_moment ON redemption_notices (bank_code, occurred_at)
    WHERE status = 'pending';
