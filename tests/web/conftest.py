"""Headless Chromium for the pages' tests: Debian's `chromium`, driven by Playwright.

The browser is installed by the test setup when missing (apt-get, as root); when no browser can
be had, the browser tests are skipped with the reason. Screenshots go to STIMULUS_TEST_ARTIFACTS
(default .stimulus/test-artifacts/) and are kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL_TIMEOUT_S = 900
# Without the background-networking switches Chromium keeps dialling Google's hosts, which this
# kind of closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _installed() -> str | None:
    return next((p for p in CHROMIUM_PATHS if Path(p).exists()), None) or shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = _installed()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                           capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False)
            if _installed() is None:
                subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S,
                               check=False)
                subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                               capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            pass
        found = _installed()
    if found is None:
        pytest.skip("no Chromium: install Debian's chromium package (apt-get install chromium) to run the "
                    "browser tests")
    return found


# Per test, not per session: while Playwright's sync API is open it keeps an event loop running in
# this thread, and every async test or fixture after it would fail to start its own.
@pytest.fixture
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[browser]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(locale="en-GB")
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("STIMULUS_TEST_ARTIFACTS", ".stimulus/test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
