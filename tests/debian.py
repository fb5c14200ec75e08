"""Debian's packages for the tests that run real outside programs (PgBouncer, haproxy, Redis
Sentinel, Chromium): found where Debian puts them, or installed when missing.

The test setup installs a missing package itself (apt-get, as root, with a time limit), never
assumes one installed by hand; a stale package index is refreshed once. Where nothing can be
installed (not root, no network) the caller gets None and says what is missing: a fixture skips,
a script stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

INSTALL_TIMEOUT_S = 600
# Debian puts daemons in /usr/sbin, which is not on every user's PATH.
SYSTEM_DIRS = (Path("/usr/sbin"), Path("/usr/bin"))


def installed(*names: str) -> str | None:
    """The first of these programs found on the PATH or in Debian's system directories."""
    for name in names:
        found = shutil.which(name) or next((str(d / name) for d in SYSTEM_DIRS if (d / name).exists()), None)
        if found:
            return found
    return None


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str, timeout_s: float = INSTALL_TIMEOUT_S, refresh: bool = False) -> None:
    """`apt-get install` without recommends (after `apt-get update` when `refresh`); best effort:
    a failure or a timeout leaves the caller to find the program missing."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = ([["update"]] if refresh else []) + [["install", "-y", "--no-install-recommends", *packages]]
    try:
        for step in steps:
            subprocess.run(["apt-get", *step], env=env, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        pass


def ensure(packages: tuple[str, ...], *names: str, timeout_s: float = INSTALL_TIMEOUT_S) -> str | None:
    """The path of one of the programs `names`, installing `packages` first when none is found;
    None when they are missing and cannot be installed here."""
    found = installed(*names)
    if found is None and can_install():
        apt_install(*packages, timeout_s=timeout_s)
        found = installed(*names)
        if found is None:
            apt_install(*packages, timeout_s=timeout_s, refresh=True)
            found = installed(*names)
    return found
