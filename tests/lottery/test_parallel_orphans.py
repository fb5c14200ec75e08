"""A draw's pool processes end with the process that made them: a killed jobs worker leaves none."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

_PARENT = textwrap.dedent("""
    import time
    from lottery.parallel import executor
    pool = executor(2)
    busy = [pool.submit(time.sleep, 120) for _ in range(2)]
    print("busy", flush=True)
    time.sleep(120)
""")


def _running(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_pool_processes_end_when_their_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "busy"
        deadline = time.monotonic() + 10
        children: list[str] = []
        while len(children) < 2 and time.monotonic() < deadline:
            children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True,
                                      text=True).stdout.split()
            time.sleep(0.1)
        assert len(children) >= 2, children
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in children if _running(pid)]
    for pid in left:
        os.kill(int(pid), 9)
    assert not left, f"pool processes outlived their parent: {left}"
