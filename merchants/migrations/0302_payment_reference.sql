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

-- A payment's reversals, summed whenever the payment is read or reversed again.
CREATE INDEX redemption_notices_reversals ON redemption_notices (merchant_id, reverses_txn_id)
    WHERE reverses_txn_id IS NOT NULL;

-- A payment notice checked and stored in one round trip (merchants.redemptions documents the
-- rules). Notices of one packet are serialised by a transaction-scoped advisory lock; each
-- statement after it takes a fresh snapshot (READ COMMITTED), so it sees every notice committed
-- before the lock was granted. Returns what happened, and the figure a refusal quotes.
CREATE FUNCTION merchants_submit_payment(
    p_merchant text, p_txn text, p_reference text, p_bank_reference text, p_amount bigint,
    p_basket bigint, p_occurred timestamptz, p_hash bytea, p_skew interval, p_lock_class int)
RETURNS TABLE (outcome text, detail text, figure bigint, campaign_id text, received_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m_status text; m_category text; m_district text;
    pk record; found_packet boolean; stored bytea; claimed bigint; at timestamptz;
BEGIN
    SELECT m.status, m.category, m.district INTO m_status, m_category, m_district
    FROM merchants m WHERE m.id = p_merchant;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_merchant', NULL::text, NULL::bigint, NULL::text, NULL::timestamptz; RETURN;
    END IF;
    IF m_status <> 'active' THEN
        RETURN QUERY SELECT 'merchant_suspended', NULL::text, NULL::bigint, NULL::text, NULL::timestamptz; RETURN;
    END IF;
    SELECT p.id, p.campaign_id, p.state, p.amount_fen, p.wallet_bank, c.state AS campaign_state,
           c.spending_deadline INTO pk
    FROM packets p JOIN campaigns c ON c.id = p.campaign_id
    WHERE merchants_payment_reference(p.campaign_id, p.id) = p_reference;
    found_packet := FOUND;
    IF found_packet THEN
        PERFORM pg_advisory_xact_lock(p_lock_class, (pk.id % 2147483647)::int);
    END IF;
    SELECT n.payload_hash INTO stored FROM redemption_notices n
    WHERE n.merchant_id = p_merchant AND n.merchant_txn_id = p_txn;
    IF FOUND THEN
        RETURN QUERY SELECT CASE WHEN stored = p_hash THEN 'replay' ELSE 'conflict' END,
                            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF NOT found_packet THEN
        RETURN QUERY SELECT 'unknown_payment_reference', NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF pk.state <> 'issued' THEN
        RETURN QUERY SELECT 'packet_not_live', pk.state, NULL::bigint, NULL::text, NULL::timestamptz; RETURN;
    END IF;
    IF pk.campaign_state NOT IN ('issuing', 'spending') OR now() >= pk.spending_deadline
            OR p_occurred >= pk.spending_deadline THEN
        RETURN QUERY SELECT 'spending_closed', pk.spending_deadline::text, NULL::bigint, NULL::text,
                            NULL::timestamptz;
        RETURN;
    END IF;
    IF p_occurred > now() + p_skew THEN
        RETURN QUERY SELECT 'occurred_in_future', NULL::text, NULL::bigint, NULL::text, NULL::timestamptz; RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM campaign_acceptance a WHERE a.campaign_id = pk.campaign_id AND a.kind = 'category')
       AND NOT EXISTS (SELECT 1 FROM campaign_acceptance a WHERE a.campaign_id = pk.campaign_id
                       AND a.kind = 'category' AND a.value = m_category) THEN
        RETURN QUERY SELECT 'merchant_not_eligible', 'category', NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM campaign_acceptance a WHERE a.campaign_id = pk.campaign_id AND a.kind = 'district')
       AND NOT EXISTS (SELECT 1 FROM campaign_acceptance a WHERE a.campaign_id = pk.campaign_id
                       AND a.kind = 'district' AND a.value = m_district) THEN
        RETURN QUERY SELECT 'merchant_not_eligible', 'district', NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT COALESCE(sum(CASE n.kind WHEN 'payment' THEN n.amount_fen ELSE -n.amount_fen END), 0) INTO claimed
    FROM redemption_notices n WHERE n.packet_id = pk.id AND n.status IN ('pending', 'matched');
    IF p_amount > pk.amount_fen - claimed THEN
        RETURN QUERY SELECT 'amount_exceeds_balance', NULL::text, pk.amount_fen - claimed, NULL::text,
                            NULL::timestamptz;
        RETURN;
    END IF;
    INSERT INTO redemption_notices AS n (merchant_id, merchant_txn_id, kind, campaign_id, packet_id, bank_code,
                                         payment_reference, bank_reference, amount_fen, basket_fen, occurred_at,
                                         payload_hash)
    VALUES (p_merchant, p_txn, 'payment', pk.campaign_id, pk.id, pk.wallet_bank, p_reference, p_bank_reference,
            p_amount, p_basket, p_occurred, p_hash)
    ON CONFLICT (merchant_id, merchant_txn_id) DO NOTHING
    RETURNING n.received_at INTO at;
    IF NOT FOUND THEN  -- the same txn id for another packet, committed meanwhile
        SELECT n.payload_hash INTO stored FROM redemption_notices n
        WHERE n.merchant_id = p_merchant AND n.merchant_txn_id = p_txn;
        RETURN QUERY SELECT CASE WHEN stored = p_hash THEN 'replay' ELSE 'conflict' END,
                            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'created', NULL::text, NULL::bigint, pk.campaign_id, at;
END
$$;
