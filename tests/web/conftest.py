"""Headless Chromium for the pages' tests: Debian's `chromium`, driven by Playwright's sync API.

Fixtures: `chromium_path` (session), `browser` (session: one Chromium for the whole run), `page`
(a fresh context and page per test, closed after it) and `artifacts` (where screenshots go:
STIMULUS_TEST_ARTIFACTS, default .stimulus/test-artifacts/, kept after the run).

The browser is installed by the test setup when missing (apt-get, as root, with a time limit);
when no browser can be had, the browser tests are skipped with the reason.

Playwright's sync API marks its own event loop as running in this thread between calls, and
pytest-asyncio cannot start a test or fixture while any loop is marked running. So the mark is
lifted whenever the browser is idle and set again while a test holds a `page`: a browser test
drives Chromium through `page`, and the async fixtures it needs are session-scoped (set up before
any function-scoped fixture) or come before `page` in its arguments.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL_TIMEOUT_S = 900
# Without the background-networking switches Chromium keeps dialling Google's hosts, which a
# closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _installed() -> str | None:
    return next((p for p in CHROMIUM_PATHS if Path(p).exists()), None) or shutil.which("chromium")


def _apt_get(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", *args], env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = _installed()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            _apt_get("install", "-y", "--no-install-recommends", "chromium")
            if _installed() is None:  # a stale package index: refresh it once and try again
                _apt_get("update")
                _apt_get("install", "-y", "--no-install-recommends", "chromium")
        except subprocess.TimeoutExpired:
            pass
        found = _installed()
    if found is None:
        reason = ("no Chromium, and it could not be installed: run `apt-get install chromium` as root "
                  "to run the browser tests")
        pytest.skip(reason if os.geteuid() == 0 else reason + " (the tests install it only as root)")
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
