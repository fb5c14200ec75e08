-- A bank's file of a million lines goes into settlement_lines in one COPY; each index and each
-- foreign key costs that COPY a million insertions or look-ups. Keep only what reconciliation
-- reads, in the form that is cheapest to fill.
--
-- The lookups by spend and by packet are equality probes (a notice's bank reference, a notice's
-- packet reference): a hash index answers them as a B-tree does, yet stores a 4-byte hash in
-- place of the text and never splits pages over long keys, which made the two B-trees the
-- largest part of the import. The bank code and the merchant, which the B-trees also held, are
-- checked on the few rows a probe finds.
DROP INDEX IF EXISTS settlement_lines_spend;
DROP INDEX IF EXISTS settlement_lines_fallback;
CREATE INDEX settlement_lines_spend ON settlement_lines USING hash (spend_id);
CREATE INDEX settlement_lines_fallback ON settlement_lines USING hash (payment_reference);

-- Nothing reads lines by file and line number, and the import is the only writer: it inserts
-- the file row first and every line under that new id in the same transaction, numbering them
-- as it reads them, once. The per-row foreign-key trigger and the unique index checked again
-- what that transaction already makes true; `stimulus audit ledger` checks that every line
-- names a stored file and that each file holds its lines once.
ALTER TABLE settlement_lines DROP CONSTRAINT IF EXISTS settlement_lines_file_id_fkey;
ALTER TABLE settlement_lines DROP CONSTRAINT IF EXISTS settlement_lines_file_id_line_no_key;
