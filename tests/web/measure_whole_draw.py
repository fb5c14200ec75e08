"""Measure "verify the whole draw" in headless Chromium against `stimulus-verify` on one core.

    python -m tests.web.measure_whole_draw [--registrants 100000] [--repeat 3]

The inputs have the shape of the `stimulus demo` campaign (six districts, one winner in twenty,
tiers A and B, three ceremony participants), built by lottery.rehearsal: a bundle and its CSV
list for each of drand quicknet + sha256-score-v1, drand quicknet + rfc3797 and sandbox +
sha256-score-v1 (the drand variants use the real published round, so the BLS check runs).
For each, the median wall time of `stimulus-verify BUNDLE --registrants LIST --service-key KEY
--workers 1` (a fresh process, as an auditor runs it) and of the page's whole-draw check (from
the click to the verdict, the page already loaded; per step as the page reports it) are printed
as a Markdown table, with their ratio. Also SHA-256 of 100,000 90-byte messages in the same
browser through WebCrypto (awaited in batches) and through the page's synchronous hashing.
Not a test: it takes a minute or two and prints figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kernel.sample import SAMPLE_DISTRICTS
from lottery import rehearsal
from sandbox.drand_chain import sign_round
from tests.web.bundle_server import Published, serving
from tests.web.conftest import CHROMIUM_ARGS, _installed

VARIANTS = {"drand + sha256-score-v1": ("drand-quicknet", "sha256-score-v1"),
            "drand + rfc3797": ("drand-quicknet", "rfc3797"),
            "sandbox + sha256-score-v1": ("sandbox", "sha256-score-v1")}
STEPS = ["fetch", "envelope", "commitment", "list", "ceremony", "beacon", "seed", "draw"]
HASH_PROBE = """async () => {
  const { Sha256Buffer } = await import("/static/public/hashing.js");
  const n = 100000, message = new Uint8Array(90), out = new Uint8Array(32), view = new DataView(out.buffer);
  let started = performance.now();
  for (let done = 0; done < n; done += 1000) {
    await Promise.all(Array.from({ length: 1000 }, () => crypto.subtle.digest("SHA-256", message)));
  }
  const webcrypto = performance.now() - started;
  const buffer = new Sha256Buffer(90);
  started = performance.now();
  for (let i = 0; i < n; i++) { buffer.bytes[3] = i; buffer.digestInto(90, view, 0); }
  return { webcrypto, sync: performance.now() - started };
}"""


def build(directory: Path, registrants: int, beacon: str, algorithm: str) -> Published:
    winners = max(6, registrants // 20)  # stimulus.demo_draw.winner_count
    n = len(SAMPLE_DISTRICTS)
    quotas = {d: winners // n + (1 if i < winners % n else 0) for i, d in enumerate(SAMPLE_DISTRICTS)}
    small = winners * 2 // 3
    tiers = [{"tier": "A", "amount_fen": 20_000, "count": winners - small},
             {"tier": "B", "amount_fen": 10_000, "count": small}]
    scenario = rehearsal.Scenario(campaign_id="demo-whole-draw", tiers=tiers, quotas=quotas, participants=3,
                                  beacon=beacon, algorithm=algorithm, sandbox_signer=sign_round)
    directory.mkdir(parents=True, exist_ok=True)
    made = rehearsal.rehearse(scenario, count=registrants, list_path=directory / "registrants.csv", keep_rows=False)
    (directory / "bundle.json").write_bytes(made.bundle_bytes)
    return Published(made.bundle_bytes, {"csv": (directory / "registrants.csv").read_bytes()})


def stimulus_verify(directory: Path, key: str) -> float:
    command = [sys.executable, "-m", "lottery.verify", str(directory / "bundle.json"), "--registrants",
               str(directory / "registrants.csv"), "--service-key", key, "--workers", "1"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"stimulus-verify failed: {done.stdout}{done.stderr}")
    return elapsed


def in_browser(page: Any, url: str) -> dict[str, float]:
    page.goto(url)
    page.wait_for_selector("body[data-loaded=true]", timeout=60_000)
    page.click("#whole-button")
    page.wait_for_selector("body[data-whole]", timeout=600_000)
    if page.get_attribute("body", "data-whole") != "pass":
        raise SystemExit(f"the page did not pass: {page.inner_text('#whole')}")
    times = {item.get_attribute("data-step"): float(item.get_attribute("data-ms"))
             for item in page.locator("#whole-steps > li").all()}
    return {**times, "total": float(page.get_attribute("#whole-verdict", "data-ms"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registrants", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(".stimulus/whole-draw"))
    args = parser.parse_args()
    chromium = _installed()
    if chromium is None:
        raise SystemExit("no Chromium: run the browser tests once (they install it) or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        for name, (beacon, algorithm) in VARIANTS.items():
            directory = args.dir / name.replace(" + ", "-")
            published = build(directory, args.registrants, beacon, algorithm)
            key = published.envelope["public_key_hex"]
            python = statistics.median(stimulus_verify(directory, key) for _ in range(args.repeat))
            with serving(published) as url:
                runs = [in_browser(page, f"{url}/campaigns/{published.campaign_id}") for _ in range(args.repeat)]
                probe = page.evaluate(HASH_PROBE) if name == next(iter(VARIANTS)) else None
            median = {step: statistics.median(r[step] for r in runs) for step in [*STEPS, "total"]}
            rows.append((name, python, median))
            print(json.dumps({"variant": name, "stimulus_verify_s": round(python, 3),
                              "browser_ms": {k: round(v, 1) for k, v in median.items()},
                              **({"sha256_100k_90B_ms": {k: round(v) for k, v in probe.items()}} if probe else {})}),
                  flush=True)
        browser.close()
    print(f"\n| {args.registrants:,} registrants | stimulus-verify, 1 core | browser, whole check | ratio | "
          "list | beacon | draw |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, python, m in rows:
        print(f"| {name} | {python:.2f} s | {m['total'] / 1000:.2f} s | {m['total'] / 1000 / python:.2f} | "
              f"{m['list'] / 1000:.2f} s | {m['beacon'] / 1000:.2f} s | {m['draw'] / 1000:.2f} s |")


if __name__ == "__main__":
    main()
