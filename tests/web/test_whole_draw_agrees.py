"""The browser's whole-draw check and stimulus-verify give the same verdict on the same files.

The spec's worked example, with its registrant list spelled in every way a reader could disagree
on (line endings, a final newline, signs and leading zeros, Unicode digits, a byte-order mark,
NDJSON with spaces, extra, repeated or reordered keys, escapes, other types): for each, the page's
worker (run straight from one page, many cases per browser start) must PASS exactly when
`stimulus-verify` does, and otherwise fail at the registrant-list step naming the same rule. The
cases follow whatever the verifier decides, so the two cannot drift apart silently.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lottery import verify
from tests.web.bundle_server import Published, serving_cases

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
BUNDLE = (EXAMPLES / "bundle.json").read_bytes()
CSV = (EXAMPLES / "registrants.csv").read_bytes()
NDJSON = (EXAMPLES / "registrants.ndjson").read_bytes()
FIRST = NDJSON.split(b"\n")[0]  # {"pseudonym":"b1f7...","stratum":"430102","ticket":1}
PSEUDONYM = json.loads(FIRST)["pseudonym"].encode()


def _first_line(data: bytes, line: bytes) -> bytes:
    rest = data.split(b"\n", 1)[1]
    return line + b"\n" + rest


def _csv_line(n: int, line: bytes) -> bytes:
    lines = CSV.split(b"\n")
    lines[n] = line
    return b"\n".join(lines)


# name -> (spelling, list bytes)
CASES: dict[str, tuple[str, bytes]] = {
    "csv": ("csv", CSV),
    "csv-no-final-newline": ("csv", CSV.rstrip(b"\n")),
    "csv-crlf": ("csv", CSV.replace(b"\n", b"\r\n")),
    "csv-blank-line": ("csv", CSV.replace(b"\n5,", b"\n\n5,")),
    "csv-two-final-newlines": ("csv", CSV + b"\n"),
    "csv-extra-field": ("csv", _csv_line(3, CSV.split(b"\n")[3] + b",x")),
    "csv-plus-sign": ("csv", CSV.replace(b"\n7,", b"\n+7,")),
    "csv-leading-zero": ("csv", CSV.replace(b"\n7,", b"\n07,")),
    "csv-unicode-digit": ("csv", CSV.replace(b"\n7,", "\n٧,".encode())),
    "csv-spaced-header": ("csv", CSV.replace(b"ticket,pseudonym,stratum", b"ticket, pseudonym, stratum")),
    "csv-bom": ("csv", b"\xef\xbb\xbf" + CSV),
    "csv-not-utf8": ("csv", CSV.replace(PSEUDONYM[:2], b"\xff\xfe", 1)),
    "csv-header-only": ("csv", b"ticket,pseudonym,stratum\n"),
    "empty": ("csv", b""),
    "ndjson": ("ndjson", NDJSON),
    "ndjson-no-final-newline": ("ndjson", NDJSON.rstrip(b"\n")),
    "ndjson-spaces": ("ndjson", _first_line(NDJSON, FIRST.replace(b'","', b'", "').replace(b",", b", "))),
    "ndjson-reordered": ("ndjson", _first_line(NDJSON, b'{"ticket":1,"pseudonym":"%s","stratum":"430102"}' % PSEUDONYM)),
    "ndjson-extra-key": ("ndjson", _first_line(NDJSON, FIRST[:-1] + b',"x":1}')),
    "ndjson-repeated-key": ("ndjson", _first_line(NDJSON, b'{"pseudonym":"x",' + FIRST[1:])),
    "ndjson-escaped": ("ndjson", _first_line(NDJSON, FIRST.replace(PSEUDONYM[:1], b"\\u00%02x" % PSEUDONYM[0], 1))),
    "ndjson-float-ticket": ("ndjson", _first_line(NDJSON, FIRST.replace(b'"ticket":1}', b'"ticket":1.0}'))),
    "ndjson-string-ticket": ("ndjson", _first_line(NDJSON, FIRST.replace(b'"ticket":1}', b'"ticket":"1"}'))),
    "ndjson-bool-ticket": ("ndjson", _first_line(NDJSON, FIRST.replace(b'"ticket":1}', b'"ticket":true}'))),
    "ndjson-array": ("ndjson", _first_line(NDJSON, b'[1,"%s","430102"]' % PSEUDONYM)),
    "ndjson-in-csv-order": ("ndjson", _first_line(NDJSON, b"1,%s,430102" % PSEUDONYM)),
}

RUN_WORKER = """async ({ base, keys, format }) => new Promise((resolve) => {
  const worker = new Worker("/static/public/whole.js", { type: "module" });
  const steps = {};
  worker.onmessage = ({ data }) => {
    if (data.type === "step" && data.status !== "running") steps[data.id] = data.status;
    if (data.type === "done") { worker.terminate(); resolve({ outcome: data.outcome, step: data.step ?? null,
                                                              rule: data.rule ?? null,
                                                              reason: JSON.stringify(data.reason ?? null), steps }); }
  };
  worker.onerror = (event) => resolve({ outcome: "error", step: null, reason: String(event.message), steps });
  worker.postMessage({ base, keys, format });
})"""


def test_the_browser_and_stimulus_verify_agree_on_every_spelling_of_the_list(page: Any, tmp_path: Path) -> None:
    key = json.loads(BUNDLE)["public_key_hex"]
    (tmp_path / "bundle.json").write_bytes(BUNDLE)
    expected: dict[str, tuple[int, list[str]]] = {}
    for name, (_, data) in CASES.items():
        (tmp_path / name).write_bytes(data)
        said: list[str] = []
        code = verify.run([str(tmp_path / "bundle.json"), "--registrants", str(tmp_path / name), "--service-key", key,
                           "--workers", "1"], say=said.append)
        expected[name] = (code, said)
    assert expected["csv"][0] == expected["ndjson"][0] == 0
    assert expected["csv-crlf"][0] == expected["csv-extra-field"][0] == expected["empty"][0] == 1

    cases = {name: Published(BUNDLE, {spelling: data}) for name, (spelling, data) in CASES.items()}
    campaign_id = cases["csv"].campaign_id
    disagreements = []
    with serving_cases(cases) as url:
        page.goto(f"{url}/static/public/vendor/VENDORED.md")  # any page of the origin: the worker runs alone
        for name, (spelling, _) in CASES.items():
            found = page.evaluate(RUN_WORKER, {"base": f"/case/{name}/v1/campaigns/{campaign_id}",
                                               "keys": f"/case/{name}/v1/keys", "format": spelling})
            code, said = expected[name]
            rule = re.match(r"FAIL (R[0-9.]+):", said[-1])
            browser_passed = found["outcome"] == "pass"
            if browser_passed != (code == 0) or (not browser_passed and (
                    found["step"] != "list" or rule is None or found["rule"] != rule.group(1))):
                disagreements.append((name, found, said[-1]))
    assert not disagreements, disagreements
