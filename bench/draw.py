"""`make bench-draw`: commitment + draw + bundle for 10,000,000 registrants, then the verifier.

Scenario: 20 strata, 300,000 winners in 3 tiers, two ceremony participants, the sandbox beacon.
The registrant list is generated first (not timed: it is the published input). Timed, each in its
own process so peak memory is measured cleanly (the process tree's summed RSS, sampled):
  * draw: hash the list into the RFC 6962 tree, sign the commitment, derive the seed, select the
    winners, lay out and sign the bundle (the service's code path, minus the database);
  * verify: `stimulus-verify bundle --registrants list`, offline;
  * baseline: hashlib.sha256 over as many leaf-sized messages (the unavoidable hashing work).
Targets: draw <= 60 s and verify <= 60 s, each <= 6x the baseline, peak memory <= 3 GB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import struct
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from lottery import parallel, rehearsal
from sandbox.drand_chain import sign_round

STRATA = [f"4301{i:02d}" for i in range(1, 21)]
TARGET_SECONDS = 60.0
TARGET_RATIO = 6.0
TARGET_MEMORY = 3 * 1024**3


def scenario(registrants: int, winners: int) -> rehearsal.Scenario:
    per, extra = divmod(winners, len(STRATA))
    quotas = {s: per + (1 if i < extra else 0) for i, s in enumerate(STRATA)}
    top, middle = winners // 30, winners // 5
    tiers = [{"tier": "gold", "amount_fen": 100_000, "count": top},
             {"tier": "silver", "amount_fen": 50_000, "count": middle},
             {"tier": "standard", "amount_fen": 20_000, "count": winners - top - middle}]
    return rehearsal.Scenario(campaign_id="bench-draw", tiers=tiers, quotas=quotas, participants=2,
                              sandbox_signer=sign_round)


def _write_part(path: str, first: int, count: int, total: int) -> None:
    n = len(STRATA)
    with open(path, "w", encoding="utf-8") as handle:
        buffer: list[str] = []
        for ticket in range(first, first + count):
            # Skewed dealing, so strata differ in size like real districts.
            stratum = STRATA[min(n - 1, int((ticket * 2654435761 % 2**32) / 2**32 * n * 1.1))]
            buffer.append(f"{ticket},{rehearsal.pseudonym(ticket)},{stratum}\n")
            if len(buffer) >= 100_000:
                handle.write("".join(buffer))
                buffer.clear()
        handle.write("".join(buffer))


def generate_list(path: Path, registrants: int, workers: int) -> None:
    marker = path.with_suffix(".done")
    if path.exists() and marker.exists() and marker.read_text() == str(registrants):
        return
    print(f"generating the registrant list: {registrants:,} rows -> {path}", flush=True)
    parts = max(workers * 2, 1)
    step = -(-registrants // parts)
    names = [f"{path}.part{i}" for i in range(parts)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_part, names, [1 + i * step for i in range(parts)],
                      [max(0, min(step, registrants - i * step)) for i in range(parts)],
                      [registrants] * parts))
    with path.open("wb") as out:
        out.write(b"ticket,pseudonym,stratum\n")
        for name in names:
            with open(name, "rb") as part:
                while chunk := part.read(1 << 24):
                    out.write(chunk)
            Path(name).unlink()
    marker.write_text(str(registrants))


def baseline(registrants: int) -> float:
    """SHA-256 over `registrants` leaf-sized messages (the leaf bytes of a typical registration)."""
    sha = hashlib.sha256
    pack = struct.Struct(">Q").pack
    batch = [b"\x00\x01" + pack(i) + b"\x00\x0abench-draw\x00\x20" + b"0" * 32 + b"\x00\x06430101"
             for i in range(min(registrants, 1_000_000))]
    started = time.perf_counter()
    done = 0
    while done < registrants:
        for message in batch[:registrants - done]:
            sha(message).digest()
        done += min(len(batch), registrants - done)
    return time.perf_counter() - started


def measured(command: list[str]) -> tuple[float, int, int, str]:
    """Wall time, peak summed RSS of the process tree, exit code, output."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    output = process.stdout.read().decode() if process.stdout else ""
    return elapsed, peak, process.returncode, output


def draw_phase(args: argparse.Namespace) -> None:
    s = scenario(args.registrants, args.winners)
    started = time.perf_counter()
    marks: dict[str, float] = {}

    def note(step: str) -> None:
        marks[step] = round(time.perf_counter() - started, 2)

    with parallel.executor(args.workers) as pool:
        result = rehearsal.rehearse_list(s, Path(args.list), pool, progress=note)
    Path(args.bundle).write_bytes(result.bundle_bytes)
    note("written")
    print(json.dumps({"marks": marks, "winners": result.bundle["draw"]["winner_count"],
                      "bundle_bytes": len(result.bundle_bytes)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registrants", type=int, default=10_000_000)
    parser.add_argument("--winners", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each timed phase; medians reported")
    parser.add_argument("--workers", type=int, default=parallel.default_workers())
    parser.add_argument("--dir", type=Path, default=Path(".stimulus/bench"))
    parser.add_argument("--phase", choices=["all", "draw"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "draw":
        draw_phase(args)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    list_path = args.dir / f"registrants-{args.registrants}.csv"
    bundle_path = args.dir / f"bundle-{args.registrants}.json"
    generate_list(list_path, args.registrants, args.workers)

    base_runs, draw_runs, verify_runs = [], [], []
    draw_peak = verify_peak = 0
    details: dict[str, Any] = {}
    for run in range(args.repeat):
        base_runs.append(baseline(args.registrants))
        elapsed, peak, code, output = measured([
            sys.executable, "-m", "bench.draw", "--phase", "draw", "--registrants", str(args.registrants),
            "--winners", str(args.winners), "--workers", str(args.workers), "--list", str(list_path),
            "--bundle", str(bundle_path)])
        if code != 0:
            sys.exit(f"draw failed:\n{output}")
        details = json.loads(output.strip().splitlines()[-1])
        draw_runs.append(elapsed)
        draw_peak = max(draw_peak, peak)
        elapsed, peak, code, output = measured([
            sys.executable, "-m", "lottery.verify", str(bundle_path), "--registrants", str(list_path),
            "--workers", str(args.workers)])
        if code != 0 or not output.rstrip().endswith("PASS"):
            sys.exit(f"verifier did not pass:\n{output}")
        verify_runs.append(elapsed)
        verify_peak = max(verify_peak, peak)
        print(f"run {run + 1}: baseline {base_runs[-1]:.1f} s, draw {draw_runs[-1]:.1f} s "
              f"(steps {details['marks']}), verify {verify_runs[-1]:.1f} s", flush=True)

    base, drawn, verified = (statistics.median(x) for x in (base_runs, draw_runs, verify_runs))
    rows = [
        ("baseline: sha256 over leaf-sized messages", f"{base:.1f} s", ""),
        ("draw: commitment + draw + bundle", f"{drawn:.1f} s",
         f"{drawn / base:.1f}x baseline (target <= {TARGET_RATIO:.0f}x, <= {TARGET_SECONDS:.0f} s)"),
        ("verify: stimulus-verify, full list", f"{verified:.1f} s",
         f"{verified / base:.1f}x baseline (target <= {TARGET_RATIO:.0f}x, <= {TARGET_SECONDS:.0f} s)"),
        ("peak memory, draw", f"{draw_peak / 1024**3:.2f} GB", "target <= 3 GB"),
        ("peak memory, verify", f"{verify_peak / 1024**3:.2f} GB", "target <= 3 GB"),
    ]
    print(f"\n{args.registrants:,} registrants, {len(STRATA)} strata, {details['winners']:,} winners in 3 tiers, "
          f"{args.workers} worker processes, medians of {args.repeat} run(s)")
    for name, value, note in rows:
        print(f"  {name:<45} {value:>9}   {note}")
    met = (drawn <= TARGET_SECONDS and verified <= TARGET_SECONDS and drawn / base <= TARGET_RATIO
           and verified / base <= TARGET_RATIO and max(draw_peak, verify_peak) <= TARGET_MEMORY)
    print("targets met" if met else "targets NOT met")


if __name__ == "__main__":
    main()
