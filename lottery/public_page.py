"""The public campaign page: one static page and its scripts, which read the public JSON API and
check a citizen's ticket in the browser (docs/draw-spec.md gives the bytes they check).

The files live in lottery/static/public/ and are package data, so an installed package serves
them too. The page is the same for every campaign: its script reads the campaign id from the
address; the route only answers 404 for a campaign that does not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from kernel.services import Services
from lottery import campaigns

STATIC = Path(__file__).parent / "static" / "public"
INDEX = (STATIC / "index.html").read_bytes()
# A page that checks proofs must not run a stale script for long: browsers revalidate every minute.
CACHE_S = 60
STATIC_CACHE = CacheControlHeader(max_age=CACHE_S, public=True)
# Scripts from this origin only, no inline code, no eval: what runs is what these files say.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": f"public, max-age={CACHE_S}",
}


@get("/campaigns/{campaign_id:str}", include_in_schema=False)
async def public_page(services: Services, campaign_id: str) -> Response[bytes]:
    await campaigns.fetch(services.pool, campaign_id)  # an unknown campaign is a 404 problem
    return Response(INDEX, media_type=MediaType.HTML, headers=PAGE_HEADERS)


def routes() -> list[Any]:
    return [public_page, create_static_files_router(path="/static/public", directories=[STATIC],
                                                    name="public-static", cache_control=STATIC_CACHE)]
