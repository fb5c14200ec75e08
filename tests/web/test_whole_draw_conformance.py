"""The browser's whole-draw check reaches the expected verdict on every full-mode conformance case.

docs/conformance/ holds bundles and lists with the verdict an implementation of docs/draw-spec.md
must reach, and for a FAIL the number of the one rule each breaks. The page's worker runs on
every full-mode case in headless Chromium (many cases from one page) and must agree with each,
rule number included: the browser is one more independent-looking implementation held to them.
The service key is pinned as `--service-key` pins it in the case's arguments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.web.bundle_server import Published, serving_cases

CONFORMANCE = Path(__file__).resolve().parents[2] / "docs" / "conformance"
RUN_WORKER = """async ({ base, keys, keyId, format }) => new Promise((resolve) => {
  const worker = new Worker("/static/public/whole.js", { type: "module" });
  worker.onmessage = ({ data }) => {
    if (data.type === "done") {
      worker.terminate();
      resolve({ outcome: data.outcome, rule: data.rule ?? null, step: data.step ?? null,
                reason: JSON.stringify(data.reason ?? null) });
    }
  };
  worker.onerror = (event) => resolve({ outcome: "error", rule: null, step: null, reason: String(event.message) });
  worker.postMessage({ base, keys, keyId, format });
})"""


def _case(case: dict[str, Any]) -> tuple[Published, str, str | None]:
    """The case's files, the list's spelling, and the pinned key's id (None: the bundle's own key)."""
    args = case["args"]
    bundle_bytes = (CONFORMANCE / args[0]).read_bytes()
    list_path = args[args.index("--registrants") + 1]
    spelling = "ndjson" if list_path.endswith(".ndjson") else "csv"
    published = Published(bundle_bytes, {spelling: (CONFORMANCE / list_path).read_bytes()})
    if "--service-key" in args:
        key = args[args.index("--service-key") + 1]
        published.keys = {hashlib.sha256(bytes.fromhex(key)).hexdigest()[:16]: key}
        return published, spelling, next(iter(published.keys))
    return published, spelling, None


def test_every_full_mode_conformance_case_gets_its_verdict_in_the_browser(page: Any) -> None:
    manifest = json.loads((CONFORMANCE / "cases.json").read_text())
    cases = [c for c in manifest["cases"] if c["mode"] == "full"]
    assert len(cases) >= 100 and {c["verdict"] for c in cases} == {"PASS", "FAIL"}
    prepared = {c["name"]: _case(c) for c in cases}
    differences = []
    with serving_cases({name: published for name, (published, _, _) in prepared.items()}) as url:
        page.goto(f"{url}/static/public/vendor/VENDORED.md")  # any page of the origin: the worker runs alone
        for case in cases:
            name = case["name"]
            _, spelling, key_id = prepared[name]
            found = page.evaluate(RUN_WORKER, {"base": f"/case/{name}/v1/campaigns/{name}",
                                               "keys": f"/case/{name}/v1/keys", "keyId": key_id, "format": spelling})
            verdict = "PASS" if found["outcome"] == "pass" else "FAIL"
            if verdict != case["verdict"] or (verdict == "FAIL" and found["rule"] != case["rule"]):
                differences.append((name, case["verdict"], case["rule"], found))
    assert not differences, differences
