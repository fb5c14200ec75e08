"""Redis Cluster refuses a script or transaction whose keys lie in more than one hash slot
(CROSSSLOT). Every multi-key script of ours tags its keys so they share one slot: checked by the
slot arithmetic (CRC16, redis-py's own) and against a real single-node cluster, which enforces
the rule exactly as a many-node one does.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio
from redis.crc import key_slot

from kernel.embedded import _redis_bin, free_port
from kernel.errors import RateLimited
from kernel.idempotency import IdempotencyStore, StoredResponse
from kernel.ratelimit import Limit, RateLimiter, bucket_key
from wallet_adapter import streams

LIMIT_SETS = [
    [Limit("id:" + "ab" * 16, 30, 5), Limit("ip:203.0.113.7", 600, 100)],
    [Limit("id:" + "cd" * 16, 30, 5), Limit("ip:2001:db8::1", 600, 100)],
    [Limit("claim:" + "ef" * 16, 10, 2)],
]


@pytest.mark.parametrize("limits", LIMIT_SETS)
def test_a_requests_buckets_share_one_slot(limits: list[Limit]) -> None:
    slots = {key_slot(bucket_key(limit).encode()) for limit in limits}
    assert len(slots) == 1, slots


def test_every_bucket_is_in_the_same_slot() -> None:
    # a person's bucket meets every address's bucket in some request: one slot for all
    slots = {key_slot(bucket_key(limit).encode()) for limits in LIMIT_SETS for limit in limits}
    assert len(slots) == 1, slots


@pytest.fixture(scope="module")
def cluster_port() -> Iterator[int]:
    """A single-node Redis Cluster owning all 16384 slots, in a directory of its own."""
    directory = Path(tempfile.mkdtemp(prefix="stimulus-cluster-"))
    port = free_port()
    while port > 55535:  # the cluster bus listens on port + 10000
        port = free_port()
    process = subprocess.Popen(
        [str(_redis_bin()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the cluster node did not start") from None
                time.sleep(0.05)
        cli = [str(Path(_redis_bin()).with_name("redis-cli")), "-p", str(port)]
        added = subprocess.run([*cli, "CLUSTER", "ADDSLOTS", *map(str, range(16384))], capture_output=True)
        assert added.stdout.strip() == b"OK", added.stdout  # (ADDSLOTSRANGE is Redis 7 only)
        while b"cluster_state:ok" not in subprocess.run([*cli, "CLUSTER", "INFO"], capture_output=True).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ready")
            time.sleep(0.05)
        yield port
    finally:
        process.kill()
        process.wait()


@pytest.fixture
async def cluster(cluster_port: int) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis(port=cluster_port)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_node_enforces_one_slot_per_script(cluster: redis_asyncio.Redis) -> None:
    # the rule this file guards against: without a shared tag, a two-key script is refused
    with pytest.raises(Exception, match="same slot"):
        await cluster.eval("return redis.call('GET', KEYS[1])", 2, "rl:id:a", "rl:ip:b")


async def test_rate_limiter_runs_on_a_cluster(cluster: redis_asyncio.Redis) -> None:
    limiter = RateLimiter(cluster)
    limits = [Limit("id:" + "01" * 16, 60, 2), Limit("ip:198.51.100.9", 600, 100)]
    now = int(time.time() * 1000)
    await limiter.check(limits, now)
    await limiter.check(limits, now)
    with pytest.raises(RateLimited):
        await limiter.check(limits, now)


async def test_idempotency_and_streams_run_on_a_cluster(cluster: redis_asyncio.Redis) -> None:
    store = IdempotencyStore(cluster)
    assert await store.begin("citizen:x", "key-1", "fp") is None
    await store.complete("citizen:x", "key-1", "fp", StoredResponse(201, b"{}", {}))
    replay = await store.begin("citizen:x", "key-1", "fp")
    assert replay is not None and replay.status == 201

    key = streams.stream_key("cluster-test", "ICBC")
    await streams.ensure_group(cluster, key)
    await streams.publish(cluster, key, [[1, 2], [3]])
    entries = await streams.read_new(cluster, key, "w1", 10, 100)
    assert [entry.outbox_ids for entry in entries] == [(1, 2), (3,)]
    assert await streams.present(cluster, key, [e.entry_id for e in entries]) == {e.entry_id for e in entries}
    await streams.ack(cluster, key, [entries[0].entry_id])
    assert await streams.lengths(cluster, [key]) == [1]
