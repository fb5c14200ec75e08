"""`python -m tests.cluster [--registrants N]`: the cluster run (tests/cluster/campaign.py),
printing each fault's failed requests and recovery time, and the truth checks."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.cluster.campaign import run, say
from tests.cluster.nodes import MissingProgram


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("--registrants", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, bundle)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stimulus-cluster-"))
    say(f"cluster run with {args.registrants:,} registrants; files in {root}")
    try:
        outcome = run(args.registrants, root)
    except MissingProgram as exc:
        raise SystemExit(str(exc)) from None
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("", *outcome.lines(), "PASS" if outcome.ok else "FAIL", sep="\n")
    sys.exit(0 if outcome.ok else 1)


if __name__ == "__main__":
    main()
