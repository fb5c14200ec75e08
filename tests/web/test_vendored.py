"""The vendored JavaScript is what VENDORED.md says it is: every file listed with its SHA-256, each
package with its licence, and every import in the page's scripts resolving to a file served here
(a bare specifier such as `@noble/hashes/sha2.js` would fail in the browser without a bundler)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lottery.public_page import STATIC

VENDOR = STATIC / "vendor"
# A one-line import or re-export, or the closing line of a multi-line one (comments hold examples
# whose lines start with " * ").
IMPORT = re.compile(r"^(?:(?:import|export)\b[^\n]*|\}\s*)\bfrom\s+['\"]([^'\"]+)['\"]", re.MULTILINE)


def _listed() -> dict[str, str]:
    text = (VENDOR / "VENDORED.md").read_text()
    return {path: digest for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.MULTILINE)}


def test_every_vendored_file_is_listed_with_its_digest() -> None:
    files = {str(p.relative_to(VENDOR)): p for p in VENDOR.rglob("*.js")}
    listed = _listed()
    assert files and set(files) == set(listed)
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed[name], name
    for package in {Path(name).parts[0] for name in files}:
        assert "MIT License" in (VENDOR / package / "LICENSE").read_text(), package


def test_every_import_resolves_to_a_served_file() -> None:
    found = [(script, specifier) for script in STATIC.rglob("*.js") for specifier in IMPORT.findall(script.read_text())]
    assert len(found) > 40  # the page's own imports and the vendored modules'
    for script, specifier in found:
        assert specifier.startswith((".", "/")), (script, specifier)
        assert (script.parent / specifier).resolve().is_file(), (script, specifier)
