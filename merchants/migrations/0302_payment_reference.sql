-- Find a packet by the reference a merchant quotes: the packet's credit idempotency key at its
-- bank (wallet_adapter.bank_protocol.idempotency_key_for), which the citizen's wallet shows.
--
-- The key is a hash of (campaign id, packet id), so it cannot be turned back into the packet;
-- an expression index over the same hash finds it in one probe without a column or trigger on
-- the packets table. Campaign and packet ids never change, so issuance updates stay heap-only.

CREATE FUNCTION merchants_payment_reference(campaign_id text, packet_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 'pkt-' || left(encode(sha256(
        'stimulus/wallet-credit/v1'::bytea
        || int4send(octet_length(campaign_id)) || convert_to(campaign_id, 'UTF8')
        || int4send(octet_length(packet_id::text)) || convert_to(packet_id::text, 'UTF8')), 'hex'), 32)
$$;

CREATE INDEX packets_payment_reference ON packets (merchants_payment_reference(campaign_id, id));
