-- Each packet is updated twice on its way to `issued` (bound to a wallet, then credited), and
-- each update writes a wider row version (wallet, credit id, timestamps). At fillfactor 80 half
-- of those versions no longer fit on their page and went to another one, updating all four
-- indexes, the payment-reference hash included. At 40 both versions fit beside the original
-- until the page is pruned, so the issuance updates stay heap-only. New pages only.
ALTER TABLE packets SET (fillfactor = 40);
