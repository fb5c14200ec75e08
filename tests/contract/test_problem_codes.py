"""The problem codes the code base can raise, the catalogue and docs/security.md agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernel.problem_codes import CODES
from tests.contract.problem_scan import raisable_codes

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `([a-z0-9_]+)` \| ([0-9, ]+) \| (.+) \|$")


def _documented() -> dict[str, tuple[set[int], str]]:
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("## Problem codes", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[set[int], str]] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            assert match[1] not in rows, f"{match[1]} is listed twice"
            rows[match[1]] = ({int(s) for s in match[2].split(",")}, match[3].strip())
    return rows


def test_the_catalogue_holds_exactly_the_codes_the_code_raises() -> None:
    raised = raisable_codes(ROOT)
    catalogued = {code: set(entry.statuses) for code, entry in CODES.items()}
    assert sorted(set(raised) - set(catalogued)) == [], "raised but not in kernel/problem_codes.py"
    assert sorted(set(catalogued) - set(raised)) == [], "catalogued but raised nowhere"
    assert {c: s for c, s in raised.items() if catalogued[c] != s} == {}, "raised with another status"


def test_docs_list_every_code_with_its_status_and_meaning() -> None:
    documented = _documented()
    assert sorted(set(CODES) - set(documented)) == [], "missing from docs/security.md"
    assert sorted(set(documented) - set(CODES)) == [], "documented but not a code"
    for code, entry in CODES.items():
        assert documented[code] == (set(entry.statuses), entry.meaning), code


def test_the_scan_finds_codes_in_each_way_they_are_raised(tmp_path: Path) -> None:
    package = tmp_path / "kernel"
    package.mkdir()
    (package / "errors.py").write_text(
        "class DomainError(Exception):\n    status = 400\n    code = 'bad_request'\n"
        "class NotFound(DomainError):\n    status = 404\n    code = 'not_found'\n")
    (package / "routes.py").write_text(
        "from kernel.errors import DomainError, NotFound\n"
        "def a():\n    raise NotFound('x', code='thing_not_found')\n"
        "def b(outcome):\n    if outcome == 'gone':\n        return NotFound('y', code=outcome)\n"
        "    raise DomainError('z', code='late', status=409)\n"
        "def _refuse(code, detail):\n    return DomainError(detail, code=code)\n"
        "def c():\n    raise _refuse('file_empty', 'empty')\n")
    assert raisable_codes(tmp_path) == {"bad_request": {400}, "not_found": {404},
                                        "thing_not_found": {404}, "gone": {404}, "late": {409},
                                        "file_empty": {400}}


def test_a_route_cannot_declare_a_code_the_catalogue_lacks_or_a_status_it_never_has() -> None:
    from kernel.contract import contract

    with pytest.raises(KeyError):
        contract("no_such_code")
    with pytest.raises(KeyError):
        contract("bad_signature:418")
    contract("bad_signature:400", "campaign_not_found")  # both known
