"""The public campaign page: one static page and its script, which read the public JSON API and
check a citizen's ticket in the browser (docs/draw-spec.md gives the bytes it checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from lottery import campaigns
from stimulus.services import Services

STATIC = Path(__file__).parent / "static" / "public"
# The page is the same for every campaign: the script reads the campaign id from the address.
INDEX = (STATIC / "index.html").read_bytes()
# A page that checks proofs must not run a stale script: browsers revalidate every minute.
STATIC_CACHE = CacheControlHeader(max_age=60, public=True)


@get("/campaigns/{campaign_id:str}", include_in_schema=False)
async def public_page(services: Services, campaign_id: str) -> Response[bytes]:
    await campaigns.fetch(services.pool, campaign_id)  # an unknown campaign is a 404 problem
    return Response(INDEX, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


def routes() -> list[Any]:
    return [public_page, create_static_files_router(path="/static/public", directories=[STATIC],
                                                    name="public-static", cache_control=STATIC_CACHE)]
