"""What every locustfile shares: the run's plan, the feeds of pre-made identities, acknowledgements.

`stimulus load` prepares each run (campaigns, registrants, a finished draw, identity tokens) and
writes a plan file; its path reaches every locust process in STIMULUS_LOAD_PLAN. Identity tokens
are signed before the run, never inside the measured loop: signing costs ~60 us of CPU that the
load generator would otherwise take from the server it shares the machine with.

A feed hands each record to exactly one simulated user, across processes and machines: generator
`i` of `n` takes records i, i+n, i+2n, ... (`i` is the locust worker index, `n` the plan's
`generators`, or STIMULUS_LOAD_GENERATORS on machines the plan was copied to).

What the system acknowledged (201 registrations with their tickets, accepted claims and
redemptions) is counted here and written to the plan's `acks_file` at the end, so the runner can
compare it with what PostgreSQL and the bank actually hold. Workers send their counts to the
master with each stats report.

Only the standard library and locust are imported, so the directory can be copied as is to
worker machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.exception import StopUser
from locust.runners import WorkerRunner
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

PLAN_ENV = "STIMULUS_LOAD_PLAN"
GENERATORS_ENV = "STIMULUS_LOAD_GENERATORS"

_plan: dict[str, Any] | None = None
_feeds: dict[str, Feed] = {}
acks: Counter[str] = Counter()
# Distinct values seen in answers (e.g. tickets told "you won"), for checks against the database.
seen: dict[str, set[int]] = {}
_unsent: dict[str, set[int]] = {}


def plan() -> dict[str, Any]:
    global _plan
    if _plan is None:
        path = os.environ.get(PLAN_ENV)
        if not path:
            raise RuntimeError(f"{PLAN_ENV} is not set: run through `stimulus load`, or point it at "
                               "the plan.json of a prepared run")
        _plan = json.loads(Path(path).read_text())
    return _plan


def plan_file(name: str) -> Path:
    """A file named in the plan: relative to the plan's directory, so a run directory can move."""
    return Path(os.environ[PLAN_ENV]).parent / name


def section(name: str) -> dict[str, Any]:
    found = plan().get(name)
    if not isinstance(found, dict):
        raise RuntimeError(f"the plan of scenario {plan().get('scenario')!r} has no {name!r} section")
    return found


def _slot(environment: Any) -> tuple[int, int]:
    runner = environment.runner
    index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    count = int(os.environ.get(GENERATORS_ENV) or plan().get("generators", 1))
    if not 0 <= index < count:
        raise RuntimeError(f"worker index {index} outside the {count} generators the plan was made for: "
                           f"set {GENERATORS_ENV} to the total number of worker processes")
    return index, count


class Feed:
    """One generator's share of a section's records; `cycle` hands them out again when used up."""

    def __init__(self, records: list[dict[str, Any]], cycle: bool) -> None:
        self.records = records
        self.cycle = cycle
        self.position = 0

    def next(self) -> dict[str, Any] | None:
        if self.position >= len(self.records):
            if not self.cycle or not self.records:
                return None
            self.position = 0
        record = self.records[self.position]
        self.position += 1
        return record

    @property
    def exhausted(self) -> bool:
        return not self.cycle and self.position >= len(self.records)


def citizens(environment: Any, name: str, cycle: bool = False) -> Feed:
    """Citizens of plan section `name`: {number, token}, from its `number<TAB>token` lines."""
    key = f"{name}:{cycle}"
    if key not in _feeds:
        index, count = _slot(environment)
        records: list[dict[str, Any]] = []
        with plan_file(section(name)["tokens_file"]).open() as lines:
            for position, line in enumerate(lines):
                if position % count == index:
                    number, _, token = line.rstrip("\n").partition("\t")
                    records.append({"number": int(number), "token": token})
        if cycle:
            # Re-checks come back in another order than the first wave.
            random.Random(index).shuffle(records)
        _feeds[key] = Feed(records, cycle)
    return _feeds[key]


def rows(environment: Any, name: str, file_key: str, fields: tuple[str, ...]) -> Feed:
    """Tab-separated records of the file named under `file_key` in plan section `name`."""
    feed_key = f"{name}/{file_key}"
    if feed_key not in _feeds:
        index, count = _slot(environment)
        found: list[dict[str, Any]] = []
        with plan_file(section(name)[file_key]).open() as lines:
            for position, line in enumerate(lines):
                if position % count == index:
                    found.append(dict(zip(fields, line.rstrip("\n").split("\t"), strict=True)))
        _feeds[feed_key] = Feed(found, cycle=False)
    return _feeds[feed_key]


def records(environment: Any, name: str, key: str, cycle: bool = False) -> Feed:
    """Records listed under `key` in plan section `name` (e.g. a merchant's keys), shared the same way."""
    feed_key = f"{name}/{key}:{cycle}"
    if feed_key not in _feeds:
        index, count = _slot(environment)
        items = list(section(name)[key])
        _feeds[feed_key] = Feed(items[index::count], cycle)
    return _feeds[feed_key]


def pause(user: Any, low_s: float, high_s: float) -> None:
    """A person's pause inside a visit. Like `User.wait`, a run that is stopping may end the user
    here, between requests, but never inside one, so no answer is lost at the end of a run."""
    if user._state == LOCUST_STATE_STOPPING:
        raise StopUser()
    user._state = LOCUST_STATE_WAITING
    gevent.sleep(random.uniform(low_s, high_s))
    if user._state == LOCUST_STATE_STOPPING:
        raise StopUser()
    user._state = LOCUST_STATE_RUNNING


_ending: list[bool] = []
_in_visit: Counter[str] = Counter()


@contextmanager
def visit(kind: str) -> Iterator[None]:
    """Marks a visit in progress, so the end of a run can wait for the visits under way."""
    _in_visit[kind] += 1
    try:
        yield
    finally:
        _in_visit[kind] -= 1


def finish_when_done(environment: Any, kind: str) -> None:
    """This generator's records of `kind` are all handed out: once no visit is still under way,
    end its part of the run (users then stop at their next pause)."""
    if not _ending and _in_visit[kind] == 0:
        _ending.append(True)
        gevent.spawn(environment.runner.quit)


def bearer(token: str, idempotent: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if idempotent:
        # A new key per logical action: the app would keep it across its own retries.
        headers["Idempotency-Key"] = str(uuid.uuid4())
    return headers


def wallet_for(number: int, banks: list[str]) -> dict[str, str]:
    """The wallet a synthetic citizen binds: deterministic, spread over the operator banks."""
    return {"bank_code": banks[number % len(banks)], "wallet_id": f"w-{number}"}


def acknowledge(kind: str, ticket: int | None = None) -> None:
    acks[kind] += 1
    if ticket is not None:
        acks[kind + "_ticket_sum"] += ticket


def remember(kind: str, value: int) -> None:
    if value not in seen.setdefault(kind, set()):
        seen[kind].add(value)
        _unsent.setdefault(kind, set()).add(value)


# -- RFC 6962 inclusion proofs, as the citizen's app checks them --------------------------------


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_ok(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: the audit path from leaf `index` reaches `root` of a tree of `size`."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    node = hashlib.sha256(b"\x00" + leaf).digest()
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = _node(sibling, node)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = _node(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root


# -- acknowledgements: summed across workers, written once at the end ---------------------------


@events.report_to_master.add_listener
def _send_acks(client_id: str, data: dict[str, Any]) -> None:
    data["stimulus_acks"] = dict(acks)
    data["stimulus_seen"] = {kind: sorted(values) for kind, values in _unsent.items()}
    acks.clear()
    _unsent.clear()


@events.worker_report.add_listener
def _receive_acks(client_id: str, data: dict[str, Any]) -> None:
    acks.update(data.get("stimulus_acks", {}))
    for kind, values in data.get("stimulus_seen", {}).items():
        seen.setdefault(kind, set()).update(values)


_environments: list[Any] = []


@events.init.add_listener
def _keep_environment(environment: Any, **_: Any) -> None:
    _environments.append(environment)


def _write_acks(**_: Any) -> None:
    if not _environments or isinstance(_environments[0].runner, WorkerRunner):
        return
    if PLAN_ENV not in os.environ:
        return
    target = plan().get("acks_file")
    if target:
        plan_file(target).write_text(json.dumps(
            {"counts": dict(acks), "seen": {kind: sorted(values) for kind, values in seen.items()}},
            sort_keys=True))


# Written at the end of the test and again at exit, after the workers' last reports are in.
events.test_stop.add_listener(_write_acks)
events.quit.add_listener(_write_acks)
