"""Published files over real HTTP: the registrant list and the bundle are written once, served by
hash with ETag, Range and immutable caching, and a warm API node serves them without PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx

from kernel.embedded import free_port
from lottery import registrant_list
from stimulus.stack import running_api
from tests.conftest import TEST_ENV, Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign
from tests.jobs_helpers import approve_and_run

IMMUTABLE = "public, max-age=31536000, immutable"


async def _committed_campaign(http: httpx.AsyncClient, stack: Stack, maker: str, checker: str, size: int) -> str:
    campaign_id = await open_campaign(http, maker)
    for n in range(size):
        r = await http.post(f"/v1/campaigns/{campaign_id}/registrations", json={},
                            headers=auth(citizen_token(stack.settings, 71_000 + n)))
        assert r.status_code in (200, 201), r.text
    assert (await http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(maker))).status_code == 200
    r = await http.post(f"/v1/admin/campaigns/{campaign_id}/commitment", headers=auth(maker))
    assert r.status_code == 202, r.text
    approval = await approve_and_run(http, stack.settings, r.json()["id"], checker)
    assert approval["status"] == "executed", approval
    return campaign_id


async def _queried_list(db: asyncpg.Connection, campaign_id: str, format: str) -> bytes:
    """The list as the download route used to stream it, straight from the committed rows."""
    rows = await db.fetch("""SELECT ticket, pseudonym, stratum FROM committed_registrants WHERE campaign_id = $1
                             ORDER BY leaf_index""", campaign_id)
    line = registrant_list.ndjson_line if format == "ndjson" else registrant_list.csv_line
    head = registrant_list.CSV_HEADER + "\n" if format == "csv" else ""
    return (head + "".join(line(r[0], r[1], r[2]) for r in rows)).encode()


async def test_list_is_a_file_with_etag_ranges_and_immutable_url(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str) -> None:
    campaign_id = await _committed_campaign(http, stack, operator_token, second_operator_token, 12)
    stored = await db.fetchval("SELECT count(*) FROM published_artefacts WHERE name LIKE $1", f"{campaign_id}/%")
    assert stored == 2  # both spellings written by the commitment itself, before any download
    for format, media in (("csv", "text/csv"), ("ndjson", "application/x-ndjson")):
        expected = await _queried_list(db, campaign_id, format)
        sha = hashlib.sha256(expected).hexdigest()
        r = await http.get(f"/v1/campaigns/{campaign_id}/registrants", params={"format": format})
        assert r.status_code == 200 and r.content == expected
        assert r.headers["content-type"].startswith(media)
        assert r.headers["etag"] == f'"{sha}"' and r.headers["accept-ranges"] == "bytes"
        assert r.headers["content-disposition"] == f'attachment; filename="{campaign_id}-registrants.{format}"'

        r = await http.get(f"/v1/artefacts/{sha}")
        assert r.status_code == 200 and r.content == expected
        assert r.headers["cache-control"] == IMMUTABLE and r.headers["etag"] == f'"{sha}"'
        r = await http.get(f"/v1/artefacts/{sha}", headers={"If-None-Match": f'"{"0" * 64}", "{sha}"'})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == f'"{sha}"'
        r = await http.get(f"/v1/campaigns/{campaign_id}/registrants", params={"format": format},
                           headers={"If-None-Match": f'"{sha}"'})
        assert r.status_code == 304

        size = len(expected)
        middle = size // 2
        for header, first, last in (("bytes=0-9", 0, 9), (f"bytes={middle}-{middle + 20}", middle, middle + 20),
                                    ("bytes=-7", size - 7, size - 1), (f"bytes={size - 3}-", size - 3, size - 1),
                                    (f"bytes=5-{size * 2}", 5, size - 1)):
            r = await http.get(f"/v1/artefacts/{sha}", headers={"Range": header})
            assert r.status_code == 206, header
            assert r.content == expected[first:last + 1], header
            assert r.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        r = await http.get(f"/v1/artefacts/{sha}", headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        r = await http.get(f"/v1/artefacts/{sha}", headers={"Range": "bytes=0-1,4-5"})
        assert r.status_code == 200 and r.content == expected  # several ranges: the whole body
        r = await http.get(f"/v1/artefacts/{sha}", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
        assert r.status_code == 200 and r.content == expected

    r = await http.get(f"/v1/artefacts/{'ab' * 32}")
    assert r.status_code == 404 and r.json()["code"] == "artefact_not_found"
    r = await http.get("/v1/artefacts/not-a-hash")
    assert r.status_code == 404 and r.json()["code"] == "artefact_not_found"


async def test_list_committed_before_files_existed_is_written_on_first_download(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str) -> None:
    campaign_id = await _committed_campaign(http, stack, operator_token, second_operator_token, 5)
    await db.execute("DELETE FROM published_artefacts WHERE name LIKE $1", f"{campaign_id}/%")
    r = await http.get(f"/v1/campaigns/{campaign_id}/registrants", params={"format": "csv"})
    assert r.status_code == 200 and r.content == await _queried_list(db, campaign_id, "csv")
    assert await db.fetchval("SELECT count(*) FROM published_artefacts WHERE name LIKE $1", f"{campaign_id}/%") == 2


class _Gate:
    """A TCP relay to PostgreSQL that counts the bytes PostgreSQL sends and can be shut: every
    connection through it is cut and new ones refused."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = free_port()
        self.from_server = 0
        self.open = True
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            await asyncio.start_server(self._relay, "127.0.0.1", self.port)
            self._ready.set()
        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        self._writers.update((writer, up_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, counted: bool) -> None:
            try:
                while data := await source.read(65536):
                    if counted:
                        self.from_server += len(data)
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()
        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def shut(self) -> None:
        def cut() -> None:
            self.open = False
            for writer in self._writers:
                writer.close()
        self._loop.call_soon_threadsafe(cut)

    def __enter__(self) -> _Gate:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def _second_node(stack: Stack, state_dir: Path, database_url: str) -> Iterator[str]:
    """Another API process with a state directory (and so an artefact cache) of its own, the same
    secrets, and its database connections through `database_url`."""
    shutil.copytree(stack.settings.state_dir / "secrets", state_dir / "secrets")
    with running_api(stack.settings, workers=1, extra_env={
            **TEST_ENV, "STIMULUS_STATE_DIR": str(state_dir), "DATABASE_URL": database_url}) as base:
        yield base


async def test_a_second_node_fetches_once_then_serves_without_the_database(
        http: httpx.AsyncClient, stack: Stack, db: asyncpg.Connection, operator_token: str,
        second_operator_token: str, tmp_path: Path) -> None:
    campaign_id = await _committed_campaign(http, stack, operator_token, second_operator_token, 30)
    expected = await _queried_list(db, campaign_id, "ndjson")
    sha = hashlib.sha256(expected).hexdigest()
    query = dict(parse_qsl(urlsplit(stack.database_url).query))  # the embedded server listens on a socket
    with _Gate(f"{query['host']}/.s.PGSQL.{query['port']}") as gate:
        through_gate = f"postgresql://postgres@127.0.0.1:{gate.port}/postgres"
        with _second_node(stack, tmp_path / "node-b", through_gate) as node_b:
            async with httpx.AsyncClient(base_url=node_b, timeout=30) as other:
                before = gate.from_server
                r = await other.get(f"/v1/campaigns/{campaign_id}/registrants")
                assert r.status_code == 200 and r.content == expected
                assert gate.from_server - before >= len(expected)  # copied from the store, once
                assert (tmp_path / "node-b" / "artefacts" / f"{sha}.ndjson").read_bytes() == expected

                before = gate.from_server
                for _ in range(10):
                    r = await other.get(f"/v1/campaigns/{campaign_id}/registrants")
                    assert r.status_code == 200 and r.content == expected
                assert gate.from_server - before < len(expected)  # no download went to PostgreSQL

                gate.shut()  # PostgreSQL is now out of this node's reach
                for n in range(20):
                    path = f"/v1/artefacts/{sha}" if n % 2 else f"/v1/campaigns/{campaign_id}/registrants"
                    r = await other.get(path)
                    assert r.status_code == 200 and r.content == expected, (path, r.status_code, r.text[:200])
                r = await other.get(f"/v1/artefacts/{sha}", headers={"Range": "bytes=-10"})
                assert r.status_code == 206 and r.content == expected[-10:]
