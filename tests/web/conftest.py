"""Headless Chromium for the pages' tests: Debian's `chromium`, driven by Playwright's sync API.

Fixtures: `chromium_path` (session), `browser` (session: one Chromium for the whole run), `page`
(a fresh context and page per test, closed after it), `artifacts` (where screenshots go:
STIMULUS_TEST_ARTIFACTS, default .stimulus/test-artifacts/, kept after the run) and
`drawn_campaign` (session: a small campaign taken through its ceremony to a finished draw).

The browser is installed by the test setup when missing (apt-get, as root, with a time limit),
with a Chinese font for the screenshots; when no browser can be had, the browser tests are
skipped with the reason.

Playwright's sync API marks its own event loop as running in this thread between calls, and
pytest-asyncio cannot start a test or fixture while any loop is marked running. So the mark is
lifted whenever the browser is idle and set again while a test holds a `page`: a browser test
drives Chromium through `page`, and the async fixtures it needs are session-scoped (set up before
any function-scoped fixture) or come before `page` in its arguments.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.sample import sample_campaign
from kernel.signing import SigningKey
from lottery.statements import ceremony_commit_statement, ceremony_reveal_statement
from tests import debian
from tests.conftest import Stack
from tests.foundation.helpers import auth, citizen_token, new_campaign_id
from tests.issuance.helpers import maker_checker

CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_TIMEOUT_S = 900
FONT_TIMEOUT_S = 120
# Without the background-networking switches Chromium keeps dialling Google's hosts, which a
# closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _installed() -> str | None:
    return debian.installed(*CHROMIUM_NAMES)


def _has_chinese_font() -> bool:
    if not shutil.which("fc-list"):
        return False
    listed = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, timeout=60, check=False)
    return bool(listed.stdout.strip())


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = debian.ensure(("chromium",), *CHROMIUM_NAMES, timeout_s=INSTALL_TIMEOUT_S)
    root = debian.can_install()
    if found is None:
        reason = ("no Chromium, and it could not be installed: run `apt-get install chromium` as root "
                  "to run the browser tests")
        pytest.skip(reason if os.geteuid() == 0 else reason + " (the tests install it only as root)")
    if root and not _has_chinese_font():
        # Best effort: without a Chinese font the pages' screenshots show empty boxes for Chinese.
        debian.apt_install("fonts-wqy-microhei", timeout_s=FONT_TIMEOUT_S)
    return found


class _Idle:
    """Lifts and restores Playwright's running-loop mark (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def park(self) -> None:
        asyncio._set_running_loop(None)

    def resume(self) -> None:
        asyncio._set_running_loop(self.loop)


@pytest.fixture(scope="session")
def _playwright_session(chromium_path: str) -> Iterator[tuple[Any, _Idle]]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    manager = sync_playwright()
    playwright = manager.start()
    idle = _Idle(asyncio.get_running_loop())
    try:
        launched = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    except BaseException:
        manager.__exit__()
        raise
    idle.park()
    try:
        yield launched, idle
    finally:
        idle.resume()
        try:
            launched.close()
        finally:
            manager.__exit__()


@pytest.fixture(scope="session")
def browser(_playwright_session: tuple[Any, _Idle]) -> Any:
    """The session's Chromium (a playwright.sync_api.Browser). Use it through `page`."""
    return _playwright_session[0]


@pytest.fixture
def page(_playwright_session: tuple[Any, _Idle]) -> Iterator[Any]:
    """A page in a fresh browser context (no cookies or storage shared between tests)."""
    launched, idle = _playwright_session
    idle.resume()
    try:
        context = launched.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()
    finally:
        idle.park()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("STIMULUS_TEST_ARTIFACTS", ".stimulus/test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- a drawn campaign ---------------------------------------------------------------------------

WINNERS = 6  # one place in each of the six sandbox districts
REGISTRANTS = 25
EMPTY_DISTRICT = 5  # citizen n lives in district n % 6: nobody from this one registers
FIRST_CITIZEN = 700_000


@dataclass(frozen=True)
class DrawnCampaign:
    campaign_id: str
    receipts: dict[int, dict[str, Any]]  # ticket -> the signed registration receipt
    winners: dict[int, list[Any]]  # ticket -> [ticket, stratum, tier, amount_fen, round] from the bundle

    @property
    def losers(self) -> list[int]:
        return sorted(set(self.receipts) - set(self.winners))


async def _ok(response: Any, status: int = 200) -> Any:
    reply: httpx.Response = await response
    assert reply.status_code == status, reply.text
    return reply.json()


@pytest.fixture(scope="session")
async def drawn_campaign(api_url: str, stack: Stack, operator_token: str,
                         second_operator_token: str) -> DrawnCampaign:
    """Two notaries commit and reveal, 25 citizens register in five of the six districts (so the
    sixth district's place spills over), the list is committed, the sandbox beacon drawn."""
    # Returned, not yielded: async fixtures must be done before a test drives Playwright.
    keys = {pid: SigningKey.generate() for pid in ("notary", "audit-office")}
    secrets_ = {pid: hashlib.sha256(f"public page {pid}".encode()).digest() for pid in keys}
    campaign_id = new_campaign_id("page")
    spec = sample_campaign(campaign_id, WINNERS, participants=[
        {"id": pid, "name": f"The {pid}", "public_key_hex": key.public_bytes.hex()} for pid, key in keys.items()])
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        base = f"/v1/campaigns/{campaign_id}"
        await _ok(http.post("/v1/admin/campaigns", json=spec, headers=auth(operator_token)), 201)
        await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/open", headers=auth(operator_token)))
        for pid, key in keys.items():
            commitment_hex = hashlib.sha256(secrets_[pid]).hexdigest()
            signature = key.sign(ceremony_commit_statement(campaign_id, pid, commitment_hex))
            await _ok(http.post(f"{base}/ceremony/{pid}/commitment",
                                json={"commitment_hex": commitment_hex, "signature_hex": signature.hex()}))
        receipts: dict[int, dict[str, Any]] = {}
        citizens = [n for n in range(FIRST_CITIZEN, FIRST_CITIZEN + REGISTRANTS * 2) if n % 6 != EMPTY_DISTRICT]
        for n in citizens[:REGISTRANTS]:
            receipt = await _ok(http.post(f"{base}/registrations", json={},
                                          headers=auth(citizen_token(stack.settings, n))), 201)
            receipts[receipt["ticket"]] = receipt
        await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/close", headers=auth(operator_token)))
        await maker_checker(http, f"/v1/admin/campaigns/{campaign_id}/commitment", operator_token,
                            second_operator_token, stack.settings)
        committed = await _ok(http.get(f"{base}/commitment"))
        for pid, key in keys.items():
            signature = key.sign(ceremony_reveal_statement(campaign_id, pid, secrets_[pid].hex(),
                                                           committed["root_hex"], committed["tree_size"]))
            await _ok(http.post(f"{base}/ceremony/{pid}/reveal",
                                json={"secret_hex": secrets_[pid].hex(), "signature_hex": signature.hex()}))
        await _ok(http.post(f"/v1/admin/campaigns/{campaign_id}/beacon/fetch",
                            headers=auth(operator_token)))
        await maker_checker(http, f"/v1/admin/campaigns/{campaign_id}/draw", operator_token, second_operator_token,
                           stack.settings)
        bundle = (await _ok(http.get(f"{base}/bundle")))["bundle"]
    return DrawnCampaign(campaign_id, receipts, {w[0]: w for w in bundle["draw"]["winners"]})
