"""The sandbox identity provider's endpoint: mounted only when sandbox mode is on."""

from __future__ import annotations

import msgspec
from litestar import post

from stimulus.contract import contract
from stimulus.errors import InvalidInput
from stimulus.identity import issue_token
from stimulus.sandbox_idp import MAX_TOKENS_PER_REQUEST, synthetic_citizen, token_for
from stimulus.services import Services


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Either a range of synthetic citizens, or one explicit identity."""

    first: int = 0
    count: int = 1
    resident_id: str | None = None
    phone: str = "13800000000"
    district: str = "430102"
    city: str = "4301"
    social_insurance_city: str | None = "4301"
    ttl_s: int = 3600


class Tokens(msgspec.Struct, frozen=True):
    sandbox: bool
    tokens: list[str]


@contract("invalid_count", "invalid_ttl")
@post("/sandbox/idp/tokens", tags=["sandbox"], status_code=200,
      summary="SANDBOX ONLY: issue identity tokens for synthetic citizens")
async def issue_tokens(services: Services, data: TokenRequest) -> Tokens:
    settings = services.settings
    key = settings.idp_key
    assert key is not None, "mounted only in development, where the sandbox key exists"
    if not 1 <= data.count <= MAX_TOKENS_PER_REQUEST or data.first < 0:
        raise InvalidInput(f"count must be 1-{MAX_TOKENS_PER_REQUEST}", code="invalid_count")
    if not 60 <= data.ttl_s <= 7 * 24 * 3600:
        raise InvalidInput("ttl_s must be between 60 s and 7 days", code="invalid_ttl")
    if data.resident_id is not None:
        token = issue_token(key, subject=data.resident_id, phone=data.phone,
                            district=data.district, city=data.city,
                            social_insurance_city=data.social_insurance_city,
                            issuer=settings.idp_issuer, audience=settings.idp_audience, ttl_s=data.ttl_s)
        return Tokens(True, [token])
    return Tokens(True, [
        token_for(key, synthetic_citizen(n), issuer=settings.idp_issuer,
                  audience=settings.idp_audience, ttl_s=data.ttl_s)
        for n in range(data.first, data.first + data.count)
    ])


ROUTES = [issue_tokens]
