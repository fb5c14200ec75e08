"""A real Redis Sentinel group for the failover tests: a primary, a replica and three sentinels,
each a process on a port of its own, in a directory of its own outside pytest's temporary root.

The servers are Debian's `redis-server` and `redis-sentinel`, installed by the test setup when
missing (apt-get, as root, with a time limit). Where they cannot be had (no network, not root),
the embedded server runs both parts: `redis-sentinel` is `redis-server --sentinel`, the same
program, so the group behaves the same. `KEEP_SENTINEL=1` keeps the directory (configuration and
logs of the servers, the sentinels and the product's processes) for a look after a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from kernel.embedded import _redis_bin, free_port
from tests import debian

MASTER = "stimulus"
START_TIMEOUT_S = 30
DOWN_AFTER_MS = 1000


def redis_server_binary() -> tuple[str, str]:
    """The server to run and where it came from: Debian's package, else the embedded binary."""
    found = debian.ensure(("redis-server", "redis-sentinel"), "redis-server")
    if found is not None:
        return found, "debian"
    return str(_redis_bin()), "embedded"


@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None


@dataclass
class SentinelGroup:
    binary: str
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stimulus-sentinel-")))
    password: str | None = None  # the primary's and replica's requirepass
    sentinel_password: str | None = None  # the sentinels' own
    servers: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """What the product's processes are given instead of REDIS_URL."""
        return {"REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
                "REDIS_SENTINEL_MASTER": MASTER}

    def _spawn(self, node: Node, conf: str, *extra: str) -> None:
        path = self.directory / f"{node.name}.conf"
        path.write_text(conf)
        log = open(self.directory / f"{node.name}.out", "ab")  # noqa: SIM115 - the child owns it
        node.process = subprocess.Popen([self.binary, str(path), *extra], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        primary, replica = Node("primary", free_port()), Node("replica", free_port())
        for node in (primary, replica):
            data = self.directory / node.name
            data.mkdir()
            conf = (f"port {node.port}\nbind 127.0.0.1\ndir {data}\nsave \"\"\nappendonly no\n"
                    f"daemonize no\nlogfile {self.directory / node.name}.log\n")
            if node is replica:
                conf += f"replicaof 127.0.0.1 {primary.port}\n"
            if self.password:
                conf += f"requirepass {self.password}\nmasterauth {self.password}\n"
            self._spawn(node, conf)
            self.servers.append(node)
        for n in range(3):
            node = Node(f"sentinel-{n}", free_port())
            self._spawn(node, (
                f"port {node.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.directory}\n"
                f"logfile {self.directory / node.name}.log\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
                + (f"sentinel auth-pass {MASTER} {self.password}\n" if self.password else "")
                + (f"requirepass {self.sentinel_password}\n" if self.sentinel_password else "")), "--sentinel")
            self.sentinels.append(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._settled():
            for node in (*self.servers, *self.sentinels):
                assert node.process is not None
                if node.process.poll() is not None:
                    raise RuntimeError(f"{node.name} exited: {self.log(node.name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinel group did not settle in {START_TIMEOUT_S} s")
            time.sleep(0.2)

    def _settled(self) -> bool:
        """Every sentinel knows the primary, the replica, and the two other sentinels."""
        try:
            for node in self.sentinels:
                with redis.Redis(port=node.port, password=self.sentinel_password, socket_timeout=1,
                                 decode_responses=True) as client:
                    state = client.execute_command("SENTINEL", "MASTER", MASTER)
                    info = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
                    if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                        return False
            with redis.Redis(port=self.servers[1].port, password=self.password, socket_timeout=1,
                             decode_responses=True) as replica:
                return bool(replica.info("replication").get("master_link_status") == "up")
        except (redis.RedisError, OSError, KeyError):
            return False

    def primary_port(self) -> int:
        """The primary's port as the sentinels now say (the first that answers)."""
        for node in self.sentinels:
            try:
                with redis.Redis(port=node.port, password=self.sentinel_password, socket_timeout=1) as client:
                    address = client.sentinel_get_master_addr_by_name(MASTER)
                    if address:
                        return int(address[1])
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError("no sentinel answered")

    def node_at(self, port: int) -> Node:
        return next(node for node in self.servers if node.port == port)

    def kill_primary(self) -> Node:
        """SIGKILL the primary: no shutdown, no last write to the replica."""
        node = self.node_at(self.primary_port())
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        return node

    def wait_for_new_primary(self, old_port: int, timeout_s: float = 60) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port != old_port:
                with redis.Redis(port=port, password=self.password, socket_timeout=1,
                                 decode_responses=True) as client:
                    if client.info("replication").get("role") == "master":
                        return port
            time.sleep(0.1)
        raise AssertionError(f"no failover within {timeout_s} s: {self.log('sentinel-0')}")

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        for node in (*self.sentinels, *self.servers):
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait(10)
        if not os.environ.get("KEEP_SENTINEL"):
            shutil.rmtree(self.directory, ignore_errors=True)
