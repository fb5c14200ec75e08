"""The operators' dashboard: a static page whose script reads each domain's admin JSON API with
the operator's bearer token; the page itself holds no data and needs no session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static" / "dashboard"
INDEX = (STATIC / "index.html").read_bytes()


@get("/admin/dashboard", include_in_schema=False, sync_to_thread=False)
def dashboard() -> Response[bytes]:
    return Response(INDEX, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": "default-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
                                   "frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})


def routes() -> list[Any]:
    return [dashboard, create_static_files_router(path="/static/dashboard", directories=[STATIC],
                                                  name="dashboard-static",
                                                  cache_control=CacheControlHeader(max_age=60))]
