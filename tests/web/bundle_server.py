"""A test-only server for the public page over a bundle file and a registrant list file.

It serves the page and its scripts from lottery/static/public/ and the public endpoints the page
reads (docs/draw-spec.md section 12.6), answered from the files: a drawn campaign without a
database. The browser tests use it for bundles the service does not make in tests (the spec's
worked examples with a real drand round, the `rfc3797` algorithm, re-signed tampered bundles), and
to measure the whole-draw check on large lists:

    python -m tests.web.bundle_server BUNDLE LIST [--port 8765]

`lists` maps a format ("csv", "ndjson") to the list bytes; a test can swap in tampered bytes.
`serving_cases` mounts many at once, each under /case/NAME/ (its API at /case/NAME/v1/...), for a
test that runs the page's worker over many bundles from one page.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lottery.public_page import INDEX, PAGE_HEADERS, STATIC

CHUNK = 1 << 16
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8", ".md": "text/plain"}


@dataclass
class Published:
    """What the server answers: one signed bundle file and its list in one or both spellings."""

    bundle_bytes: bytes
    lists: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, str] | None = None  # what /v1/keys answers; by default the bundle's own key

    @property
    def envelope(self) -> dict[str, Any]:
        return dict(json.loads(self.bundle_bytes))

    def published_keys(self) -> dict[str, str]:
        if self.keys is not None:
            return self.keys
        envelope = self.envelope
        return {envelope["key_id"]: envelope["public_key_hex"]}

    @property
    def campaign_id(self) -> str:
        return str(self.envelope["bundle"]["campaign"]["id"])

    def campaign(self) -> dict[str, Any]:
        bundle = self.envelope["bundle"]
        c = bundle["campaign"]
        return {**{k: c[k] for k in ("id", "name", "budget_fen", "tiers", "registration_opens_at",
                                     "registration_closes_at", "beacon", "participants", "draw_rules")},
                "strata": [{**s, "name": None} for s in c["strata"]], "state": "drawn",
                "registrations": bundle["commitment"]["tree_size"], "claim_deadline": None,
                "spending_deadline": None}

    def summary(self) -> dict[str, Any]:
        envelope = self.envelope
        bundle = envelope["bundle"]
        return {"campaign_id": self.campaign_id, "bundle_sha256_hex": hashlib.sha256(self.bundle_bytes).hexdigest(),
                "bundle_bytes": len(self.bundle_bytes), "key_id": envelope["key_id"], "winners_omitted": True,
                "bundle": {**bundle, "draw": {k: v for k, v in bundle["draw"].items() if k != "winners"}}}


def _handler(mounted: dict[str, Published]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = url.path
            if path.startswith("/static/public/"):
                target = (STATIC / path.removeprefix("/static/public/")).resolve()
                if STATIC.resolve() not in target.parents or not target.is_file():
                    self._problem(404)
                else:
                    self._send(200, target.read_bytes(), TYPES.get(target.suffix, "application/octet-stream"))
                return
            prefix = ""
            if path.startswith("/case/"):
                prefix = "/".join(path.split("/")[:3])
                path = path.removeprefix(prefix)
            published = mounted.get(prefix)
            if published is None:
                self._problem(404)
                return
            # The bundle and the list are served whatever they hold (a case may be malformed on
            # purpose); the page's other endpoints need a readable bundle.
            parts = path.split("/")
            if path == "/v1/keys":
                self._json(published.published_keys())
            elif len(parts) == 5 and parts[1:3] == ["v1", "campaigns"] and parts[4] == "bundle":
                self._send(200, published.bundle_bytes, "application/json")
            elif len(parts) == 5 and parts[1:3] == ["v1", "campaigns"] and parts[4] == "registrants":
                spelling = parse_qs(url.query).get("format", ["csv"])[0]
                if spelling not in published.lists:
                    self._problem(404)
                else:
                    self._stream(published.lists[spelling], "text/csv" if spelling == "csv" else "application/x-ndjson")
            else:
                self._page(published, path)

        def _page(self, published: Published, path: str) -> None:
            envelope = published.envelope
            base = f"/v1/campaigns/{published.campaign_id}"
            if path == f"/campaigns/{published.campaign_id}":
                self._send(200, INDEX, "text/html; charset=utf-8", PAGE_HEADERS)
            elif path == base:
                self._json(published.campaign())
            elif path == f"{base}/commitment":
                self._json(envelope["bundle"]["commitment"])
            elif path == f"{base}/draw":
                self._json(published.summary())
            else:
                self._problem(404)

        def _json(self, value: Any) -> None:
            self._send(200, json.dumps(value).encode(), "application/json")

        def _problem(self, status: int) -> None:
            self._send(status, b'{"status":404,"code":"not_found"}', "application/problem+json")

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                if name != "Cache-Control":
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, body: bytes, content_type: str) -> None:
            """Chunked, as the service streams the list: the browser sees no Content-Length."""
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            view = memoryview(body)
            for at in range(0, len(body), CHUNK):
                piece = view[at:at + CHUNK]
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    return Handler


@contextmanager
def serving(published: Published, port: int = 0) -> Iterator[str]:
    """The server on 127.0.0.1 in a thread; yields its base address."""
    with _serving({"": published}, port) as url:
        yield url


@contextmanager
def serving_cases(cases: dict[str, Published]) -> Iterator[str]:
    """Each case under /case/NAME/ (the page's scripts at /static/public/ as usual)."""
    with _serving({f"/case/{name}": published for name, published in cases.items()}, 0) as url:
        yield url


@contextmanager
def _serving(mounted: dict[str, Published], port: int) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(mounted))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("registrants", type=Path, help="the list (CSV or NDJSON, told by its first line)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    data = args.registrants.read_bytes()
    spelling = "ndjson" if data[:1] == b"{" else "csv"
    published = Published(args.bundle.read_bytes(), {spelling: data})
    with serving(published, args.port) as url:
        print(f"{url}/campaigns/{published.campaign_id}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
