"""The catalogue of stable problem `code`s: each one's HTTP status and what it means.

A code is part of the API: clients branch on it, so it never changes meaning. This catalogue is
what the OpenAPI document (`kernel.contract`) and docs/security.md say about each code; a test
reads the source for every code the code base can answer with and holds the three together.

`on` names the kinds of operation every one of which can answer the code, whatever the route
does: `request` (any parameter or body), `body` (a request body), `identity` (a citizen's
identity token), `staff` (an operator or auditor token), `signature` (a signed merchant request),
`storage` (anything that reads PostgreSQL or Redis); `kind:status` where a code with more than
one status answers that kind with only one of them. Codes without `on` are declared by the routes
that raise them, the same way (`code` or `code:status`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemCode:
    statuses: tuple[int, ...]
    meaning: str
    on: tuple[str, ...] = ()


def _c(status: int | tuple[int, ...], meaning: str, *on: str) -> ProblemCode:
    return ProblemCode(status if isinstance(status, tuple) else (status,), meaning, on)


CODES: dict[str, ProblemCode] = {
    # The request itself, refused before any route runs.
    "bad_request": _c(400, "the request is not valid (generic)"),
    "invalid_input": _c(400, "the request is not valid (generic)"),
    "validation_failed": _c(400, "a parameter or a body field has the wrong type, is missing or is unknown", "request"),
    "malformed_json": _c(400, "the body is not JSON", "body"),
    "body_too_large": _c(413, "the body exceeds the size limit", "body"),
    "unsupported_media_type": _c(415, "the body's Content-Type is not one this operation takes "
                                 "(application/json unless the operation says otherwise)", "body"),
    "duplicate_key": _c(400, "a JSON object in the body gives one key twice", "body"),
    "invalid_text": _c(400, "a path parameter, query value, header or body string holds a control "
                       "character, or the query string is not UTF-8", "request"),
    "invalid_value": _c(400, "a value lies beyond what can be stored (one the checks at the edge missed)",
                        "request"),
    "not_found": _c(404, "no such resource or route"),
    "method_not_allowed": _c(405, "the route exists but not with this method"),
    "not_acceptable": _c(406, "no representation matches the Accept header"),
    "unprocessable": _c(422, "the request is well formed but cannot be processed (generic)"),
    "conflict": _c(409, "conflicts with the current state (generic)"),
    "wrong_state": _c(409, "not allowed in the current state (generic)"),
    "forbidden": _c(403, "not allowed (generic)"),
    "lease_lost": _c(409, "another process took over a singleton job's lease (the job stops)"),
    "rate_limited": _c(429, "too many requests from this citizen or address; retry after Retry-After"),
    "unavailable": _c(503, "a dependency is unavailable; retry after Retry-After", "storage"),
    "dependency_unavailable": _c(503, "PostgreSQL or Redis did not answer in time (0.5 s for Redis, 1.5 s "
                                 "for a request's database work); retry after Retry-After", "storage"),
    "not_ready": _c(503, "the process cannot reach PostgreSQL or Redis (readiness probe)"),
    "internal_error": _c(500, "the server failed; the request id identifies the log entry"),
    # Identity tokens: citizens', and operators' where they sign in with the identity provider.
    "unauthenticated": _c(401, "no credentials were presented", "staff"),
    "bad_authorization_header": _c(401, "the Authorization header is not 'Bearer <token>'", "identity", "staff"),
    "identity_token_required": _c(401, "this operation needs a citizen's identity token", "identity"),
    "token_malformed": _c(401, "the identity token is not a well-formed JWT", "identity", "staff"),
    "token_algorithm": _c(401, "the identity token is signed with an algorithm that is not allowed", "identity", "staff"),
    "token_unknown_key": _c(401, "the identity token names a signing key we do not trust", "identity", "staff"),
    "token_signature_invalid": _c(401, "the identity token's signature does not verify", "identity", "staff"),
    "token_issuer": _c(401, "the identity token was issued by another provider", "identity", "staff"),
    "token_audience": _c(401, "the identity token is meant for another service", "identity", "staff"),
    "token_expired": _c(401, "the identity token has expired", "identity", "staff"),
    "token_not_yet_valid": _c(401, "the identity token is not valid yet", "identity", "staff"),
    "token_lifetime": _c(401, "the identity token lives longer than the provider's tokens may", "identity", "staff"),
    "token_claims_missing": _c(401, "the identity token lacks a claim we need", "identity", "staff"),
    "invalid_resident_id": _c(401, "the identity token's resident ID is not a valid ID number", "identity"),
    # Operator and auditor tokens.
    "invalid_admin_token": _c(401, "the operator or auditor token is unknown", "staff"),
    "admin_token_expired": _c(401, "the operator or auditor token has expired", "staff"),
    "admin_token_revoked": _c(401, "the operator or auditor token was revoked", "staff"),
    "role_required": _c(403, "the token's role may not do this (an auditor reads, an operator acts)", "staff"),
    "same_operator": _c(403, "the approving operator is the one who asked"),
    # Signed merchant requests.
    "signature_missing": _c(401, "one of X-Merchant-Id, X-Timestamp, X-Nonce, X-Signature is absent", "signature"),
    "bad_timestamp": _c(401, "X-Timestamp is not unix seconds", "signature"),
    "bad_nonce": _c(401, "X-Nonce is not 16-64 url-safe characters", "signature"),
    "bad_signature": _c((400, 401), "a signature does not verify: a merchant request's X-Signature "
                        "(401, on signed requests) or a ceremony participant's (400)", "signature:401"),
    "stale_timestamp": _c(401, "X-Timestamp is more than 300 s from our clock", "signature"),
    "unknown_merchant": _c(401, "no merchant has this id", "signature"),
    "nonce_reused": _c(401, "the merchant already used this nonce", "signature"),
    "merchant_mismatch": _c(403, "X-Merchant-Id differs from the merchant in the path", "signature"),
    "merchant_suspended": _c(403, "the merchant is suspended", "signature"),
    # Idempotency keys.
    "invalid_idempotency_key": _c(400, "the Idempotency-Key header is not 1-255 printable characters"),
    "idempotency_key_in_use": _c(409, "a request with this Idempotency-Key is still running"),
    "idempotency_key_reused": _c(422, "this Idempotency-Key was used with another request"),
    # Campaigns.
    "campaign_not_found": _c(404, "no campaign has this id"),
    "campaign_exists": _c(409, "a campaign with this id exists"),
    "invalid_campaign_id": _c(400, "a campaign id is 3-40 characters of a-z 0-9 -"),
    "invalid_name": _c(400, "the campaign name is empty or too long"),
    "invalid_label": _c(400, "a tier or stratum label is not valid"),
    "invalid_budget": _c(400, "the budget is not a positive number of fen"),
    "invalid_tiers": _c(400, "the tiers are empty, repeated or not positive"),
    "tiers_exceed_budget": _c(400, "the tiers add up to more than the budget"),
    "invalid_strata": _c(400, "the strata are empty, repeated or their quotas are not positive"),
    "quotas_mismatch": _c(400, "the strata quotas do not add up to the number of packets"),
    "naive_datetime": _c(400, "a date-time lacks its UTC offset"),
    "windows_out_of_order": _c(400, "registration, claim and spending windows are not in order"),
    "invalid_beacon": _c(400, "the beacon choice is not valid"),
    "invalid_participants": _c(400, "the ceremony participants are not valid"),
    "invalid_eligibility": _c(400, "the eligibility rules are not valid"),
    "invalid_draw_rules": _c(400, "the draw rules are not valid"),
    "unknown_state": _c(400, "not a campaign state"),
    "wrong_campaign_state": _c(409, "the campaign is not in a state that allows this"),
    # Registration.
    "registration_not_open": _c(409, "registration has not opened yet"),
    "registration_closed": _c(409, "registration has closed"),
    "registration_conflict": _c(409, "this citizen registered with another wallet"),
    "registration_not_found": _c(404, "this citizen has not registered for the campaign"),
    "invalid_wallet": _c(400, "the wallet's bank code or wallet id is not valid"),
    "unknown_bank": _c(400, "no operator bank has this code"),
    "ineligible": _c(403, "the citizen is not eligible (generic)"),
    "ineligible_district": _c(403, "the citizen's district is not eligible"),
    "ineligible_location": _c(403, "the citizen is not in the campaign's city"),
    "ineligible_phone": _c(403, "the citizen has no mainland mobile number"),
    "ineligible_social_insurance": _c(403, "the citizen has no social insurance in the city"),
    "ineligible_too_young": _c(403, "the citizen is younger than the campaign allows"),
    "ineligible_too_old": _c(403, "the citizen is older than the campaign allows"),
    # Commitment, ceremony, beacon and draw.
    "not_committed": _c(404, "the registrant list has not been committed yet"),
    "artefact_not_found": _c(404, "no published file has this SHA-256"),
    "ticket_not_committed": _c(404, "no committed registration has this ticket"),
    "invalid_format": _c(400, "not one of the formats this operation serves"),
    "participant_not_found": _c(404, "no ceremony participant has this id"),
    "invalid_hex": _c(400, "a value is not hex of the expected length"),
    "commitment_exists": _c(409, "this participant has committed already"),
    "commitment_too_late": _c(409, "the ceremony's commitment phase is over"),
    "no_commitment": _c(409, "this participant made no commitment"),
    "reveal_not_open": _c(409, "reveals open once the registrant list is committed"),
    "reveal_too_late": _c(409, "the reveal deadline has passed"),
    "reveal_mismatch": _c(400, "the revealed secret does not match the commitment"),
    "invalid_secret": _c(400, "the revealed secret is not 32 bytes of hex"),
    "ceremony_incomplete": _c(409, "a ceremony participant has not revealed"),
    "beacon_exists": _c(409, "the beacon is already recorded"),
    "beacon_invalid": _c(400, "the beacon's signature or value does not verify"),
    "beacon_before_commitment": _c(400, "the beacon round was published before the commitment"),
    "beacon_before_reveals": _c(400, "the beacon round was published before the reveals closed"),
    "wrong_beacon_kind": _c(400, "the beacon is not of the campaign's kind"),
    "wrong_beacon_round": _c(400, "the beacon is not the campaign's round"),
    "beacon_not_recorded": _c((404, 409), "no beacon is recorded yet (404 reading it, 409 drawing)"),
    "beacon_not_yet_published": _c(409, "the campaign's beacon round is not published yet; fetch after its time"),
    "beacon_unavailable": _c(503, "no drand relay gave a valid round; retry, or submit the round by hand"),
    "sandbox_beacon_refused": _c(400, "the sandbox drand chain is trusted in development only"),
    "already_drawn": _c(409, "the draw has run"),
    "not_drawn": _c((404, 409), "the draw has not run yet (404 reading results, 409 issuing)"),
    # Approvals (maker-checker).
    "approval_not_found": _c(404, "no approval request has this id"),
    "approval_pending": _c(409, "the same request is already waiting for approval"),
    "approval_decided": _c(409, "the approval request was approved or rejected already"),
    "unknown_action": _c(400, "not an action that needs approval"),
    "job_not_found": _c(404, "no job has this id"),
    "job_not_failed": _c(409, "only a failed job can be queued again"),
    "reason_required": _c(400, "a rejection or suspension needs a reason"),
    # Packets, claims, issuance and expiry.
    "not_a_winner": _c(404, "this registration did not win a packet"),
    "wallet_already_bound": _c(409, "the packet is bound to another wallet"),
    "claim_deadline_passed": _c(409, "the claim deadline has passed"),
    "claim_deadline_not_passed": _c(409, "the claim deadline has not passed yet"),
    "packet_cancelled": _c(409, "the packet was cancelled"),
    "nothing_to_issue": _c(409, "no unclaimed packet has a wallet bound at registration"),
    "expiry_running": _c(409, "expiry is already running"),
    "spending_not_over": _c(409, "the spending window has not ended"),
    # Merchants and redemptions.
    "merchant_not_found": _c(404, "no merchant has this id"),
    "merchant_exists": _c(409, "a merchant with this id exists"),
    "invalid_merchant": _c(400, "a merchant field breaks its rule"),
    "invalid_status": _c(400, "not a merchant status"),
    "invalid_acceptance": _c(400, "acceptance lists hold unknown categories or districts"),
    "csv_invalid": _c(422, "the merchant file breaks a rule; `errors` lists the lines; nothing was imported"),
    "invalid_basket": _c(400, "the notice's amounts do not add up"),
    "merchant_txn_id_reused": _c(409, "this merchant_txn_id was used with another payload"),
    "notice_not_found": _c(404, "no notice has this merchant_txn_id"),
    "unknown_payment_reference": _c(422, "no packet has this payment reference"),
    "packet_not_live": _c(422, "the packet is not spendable"),
    "spending_closed": _c(422, "the purchase is outside the campaign's spending window"),
    "occurred_in_future": _c(422, "occurred_at is in the future"),
    "merchant_not_eligible": _c(403, "the campaign does not accept packets at this merchant"),
    "amount_exceeds_balance": _c(422, "the packet has less left than the notice claims"),
    "payment_not_found": _c(404, "no payment notice has this merchant_txn_id"),
    "not_a_payment": _c(422, "a reversal must refer to a payment notice"),
    "payment_in_break": _c(409, "the payment is in an unresolved reconciliation break"),
    "reversal_exceeds_payment": _c(422, "the reversals would exceed the payment"),
    # Settlement files and reconciliation.
    "settlement_empty": _c(400, "the settlement file is empty"),
    "settlement_not_utf8": _c(400, "the settlement file is not UTF-8"),
    "settlement_bad_header": _c(400, "the settlement file's header line is wrong"),
    "settlement_bad_trailer": _c(400, "the settlement file's trailer is not valid"),
    "settlement_truncated": _c(400, "the settlement file has no trailer: it is truncated"),
    "settlement_wrong_bank": _c(400, "the settlement file is another bank's"),
    "settlement_wrong_day": _c(400, "the settlement file is for another day"),
    "settlement_count_mismatch": _c(400, "the settlement trailer's line count is wrong"),
    "settlement_total_mismatch": _c(400, "the settlement trailer's total is wrong"),
    "reconciliation_running": _c(409, "a reconciliation run is in progress"),
    "invalid_run_options": _c(400, "the reconciliation run's options are not valid"),
    "invalid_break_class": _c(400, "not a break class"),
    "break_not_found": _c(404, "no break has this id"),
    "break_already_resolved": _c(409, "the break is resolved already"),
    "invalid_resolution": _c(400, "not a resolution this break allows"),
    # The sandbox identity provider (development only).
}


def statuses_of(declared: str) -> tuple[str, tuple[int, ...]]:
    """`code` or `code:status` -> the code and the statuses meant; KeyError if not catalogued."""
    code, _, status = declared.partition(":")
    statuses = CODES[code].statuses
    if status:
        if int(status) not in statuses:
            raise KeyError(f"{code} is never answered with {status}")
        statuses = (int(status),)
    return code, statuses


def codes_on(kind: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every code (with its statuses) that any operation of this kind can answer."""
    found = []
    for code, entry in CODES.items():
        for on in entry.on:
            name, _, status = on.partition(":")
            if name == kind:
                found.append((code, (int(status),) if status else entry.statuses))
    return found
