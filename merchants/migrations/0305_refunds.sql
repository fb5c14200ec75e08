-- Refunds in the banks' settlement files, and where the reconciler pairs them.
--
-- A refund's line carries the bank's refund id in spend_id (the two share one namespace at a
-- bank), the spend it refunds, and where the bank put the money: back on the packet (`wallet`)
-- or, once the packet's balance was reclaimed, back to the city (`budget`). A merchant's
-- reversal notice pairs with a refund line, never with a spend's, and only once the payment it
-- reverses is matched, so the ledger moves redeemed money back only after it got there.
ALTER TABLE settlement_lines
    ADD COLUMN kind text NOT NULL DEFAULT 'spend' CHECK (kind IN ('spend', 'refund')),
    ADD COLUMN refund_of text,
    ADD COLUMN returned_to text CHECK (returned_to IN ('wallet', 'budget')),
    ADD CONSTRAINT settlement_lines_refund_fields
        CHECK ((kind = 'refund') = (refund_of IS NOT NULL) AND (kind = 'refund') = (returned_to IS NOT NULL));

-- What a refund's match gave back, and to whom: the ledger audit adds these up.
ALTER TABLE reconciliation_matches
    ADD COLUMN returned_to text CHECK (returned_to IN ('wallet', 'budget'));
