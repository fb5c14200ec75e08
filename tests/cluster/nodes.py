"""Starting the cluster's parts as real processes on loopback addresses.

PostgreSQL is an embedded server of the run's own, reached through a real PgBouncer in
transaction mode (tests/pooler's fixture code). Redis is a Sentinel group (tests/redis_ha's: a
primary, a replica and three sentinels, each asking for a password); the nodes are given only
the sentinels. The API nodes listen on 127.0.0.2, 127.0.0.3... behind haproxy (Debian's package),
whose address is the only one they trust for X-Forwarded-For.

Every API node and worker runs as a city runs it: STIMULUS_ENV=production, each with a state
directory of its own, all given the same secret files (pepper, service key, the banks' API key
and pinned response keys, the Redis passwords). The sandbox bank, identity provider and drand
relay run beside them as outside parties: the nodes know the bank by URL, API key and pinned key,
the provider by an https:// issuer and a discovery URL, the relay by URL, and trust nothing
of the sandbox's own (its routes are not mounted, its beacon chain is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kernel.embedded import free_port
from kernel.servers import RunningStack, migrate_sync, start_stack
from kernel.settings import Settings, load_settings
from kernel.signing import SigningKey
from sandbox.idp import command as idp_command
from stimulus.stack import ChildProcess, spawn, wait_http_ok
from tests import debian
from tests.pooler.conftest import PgBouncer
from tests.redis_ha.sentinel_group import SentinelGroup, redis_server_binary
from wallet_adapter.provider import fetch_sandbox_public_key

PROXY_ADDRESS = "127.0.0.9"     # haproxy's source address towards the nodes: the one trusted proxy
PROXY_LISTEN = "127.0.0.10"
NODE_ADDRESSES = ("127.0.0.2", "127.0.0.3")
# The city's identity provider, as the nodes know it: its tokens' issuer is an https:// name; its
# discovery document is reached on loopback, as through a local egress proxy.
ISSUER = "https://id.cluster.example"
AUDIENCE = "stimulus-cluster"
# Variables of the harness's own environment that must not leak into a node's.
OWN_PREFIXES = ("STIMULUS_", "DATABASE_", "REDIS_", "PROMETHEUS_")
# Shorter than the default 30 s so that a killed jobs worker's draw is taken over within the run.
JOB_LEASE_S = 10.0
HAPROXY_CONFIG = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 900s
    timeout server 900s
    retries 3
    option redispatch
    option forwardfor
backend nodes
    balance roundrobin
    source {source}
    option httpchk GET /ready
    default-server inter 500ms fall 2 rise 2
{servers}
frontend api
    bind {listen}:{port}
    default_backend nodes
"""


class MissingProgram(RuntimeError):
    """A Debian package the cluster needs is missing and cannot be installed here."""


def program(package: str, binary: str) -> str:
    """The path of `binary`, installing Debian's `package` first if it is missing."""
    found = debian.ensure((package,), binary)
    if found is None:
        raise MissingProgram(f"{package} is not installed and could not be installed "
                             "(apt-get needs root and a network)")
    return found


@dataclass
class Node:
    """One API node or worker: its command and environment, so it can be killed and started again."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    child: ChildProcess | None = None
    url: str | None = None

    def start(self) -> None:
        self.child = spawn(self.name, self.command, self.env, self.log)
        if self.url:
            wait_http_ok(self.url + "/ready", timeout_s=120, process=self.child.process)

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.process.pid

    def kill(self) -> None:
        """SIGKILL, the whole process group (granian's workers too): no goodbye, no lease released."""
        assert self.child is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.child.process.pid, signal.SIGKILL)
        self.child.process.wait(10)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@dataclass
class Cluster:
    root: Path
    settings: Settings | None = None
    running: RunningStack | None = None
    bouncer: PgBouncer | None = None
    redis: SentinelGroup | None = None
    haproxy: subprocess.Popen[bytes] | None = None
    others: list[ChildProcess] = field(default_factory=list)
    apis: list[Node] = field(default_factory=list)
    issuers: list[Node] = field(default_factory=list)
    dispatchers: list[Node] = field(default_factory=list)
    jobs: list[Node] = field(default_factory=list)
    base_url: str = ""
    env: dict[str, str] = field(default_factory=dict)   # what every node is started with
    bank_url: str = ""
    bank_api_key: str = ""
    bank_public_key: bytes = b""
    relay_url: str = ""

    def start(self, say: Callable[[str], None]) -> None:
        haproxy_bin = program("haproxy", "haproxy")
        pgbouncer_bin = program("pgbouncer", "pgbouncer")
        # The harness's own environment: what it starts outside the nodes (PostgreSQL itself,
        # the outside parties) and what its checks read with.
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
        env.update(STIMULUS_ENV="development", STIMULUS_STATE_DIR=str(self.root / "harness"),
                   STIMULUS_LOG_LEVEL="WARNING")
        self.running = start_stack(load_settings(env), need_redis=False)
        direct = self.running.settings
        assert direct.database_url
        migrate_sync(direct)
        redis_binary, origin = redis_server_binary()
        self.redis = SentinelGroup(redis_binary, self.root / "redis", password=secrets.token_urlsafe(18),
                                   sentinel_password=secrets.token_urlsafe(18))
        self.redis.directory.mkdir(parents=True)
        self.redis.start()
        say(f"PostgreSQL {direct.database_url}; Redis: primary, replica and 3 sentinels ({origin} "
            f"{redis_binary}), {self.redis.env['REDIS_SENTINELS']}, passwords on both")
        self.bouncer = PgBouncer(pgbouncer_bin, self.root / "pgbouncer", direct.database_url)
        self.bouncer.configure()
        self.bouncer.start()
        say(f"PgBouncer (transaction mode) on 127.0.0.1:{self.bouncer.port}")

        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        parties = self._outside_parties(env, logs, direct.bank_codes)
        node_env = {**env, **parties, **self._secret_files(direct.bank_codes),
                    "STIMULUS_ENV": "production",
                    "DATABASE_URL": self.bouncer.url, "DATABASE_DIRECT_URL": direct.database_url,
                    "STIMULUS_DB_POOLER": "pgbouncer", **self.redis.env,
                    "STIMULUS_TRUSTED_PROXIES": f"{PROXY_ADDRESS}/32",
                    "STIMULUS_RATE_LIMIT_IDENTITY_PER_MIN": "60", "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN": "0",
                    "STIMULUS_JOB_LEASE_S": str(JOB_LEASE_S)}
        self.env = node_env
        settings = load_settings(node_env)
        assert not settings.sandbox
        # The harness signs citizens' tokens with the provider's key file, as its sign-in would.
        self.settings = replace(settings, database_url=direct.database_url,
                                sandbox_idp_dir=self.root / "idp")
        say(f"nodes in production: issuer {ISSUER} (keys from {parties['STIMULUS_IDP_DISCOVERY_URL']}), "
            f"banks {parties['STIMULUS_BANKS']} with pinned keys, secrets from *_FILE")
        for index, address in enumerate(NODE_ADDRESSES):
            port = free_port()
            metrics = self.root / f"metrics-api-{index}"
            metrics.mkdir(exist_ok=True)
            command = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", address,
                       "--port", str(port), "--workers", "1", "--loop", "uvloop", "--no-ws",
                       "--log-level", "warning", "--no-access-log", "stimulus.app:create_app_from_env"]
            node = Node(f"api-{index}", command, {**node_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                                                  "STIMULUS_STATE_DIR": str(self.root / f"state-api-{index}"),
                                                  "STIMULUS_METRICS_PORT": str(free_port())},
                        logs / f"api-{index}.log", url=f"http://{address}:{port}")
            self.apis.append(node)
        for node in self.apis:
            node.start()
        worker = [sys.executable, "-m", "stimulus.cli", "worker"]
        for index in range(2):
            for role, group in (("issuance", self.issuers), ("issuance-dispatcher", self.dispatchers),
                                ("jobs", self.jobs)):
                metrics = self.root / f"metrics-{role}-{index}"
                metrics.mkdir(exist_ok=True)
                group.append(Node(f"{role}-{index}", [*worker, role],
                                  {**node_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                                   "STIMULUS_STATE_DIR": str(self.root / f"state-{role}-{index}"),
                                   "STIMULUS_METRICS_PORT": str(free_port())}, logs / f"{role}-{index}.log"))
        for node in (*self.issuers, *self.dispatchers, *self.jobs):
            node.start()

        proxy_port = free_port()
        servers = "\n".join(f"    server {n.name} {n.url.removeprefix('http://')} check" for n in self.apis
                            if n.url)
        config = self.root / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(source=PROXY_ADDRESS, servers=servers, listen=PROXY_LISTEN,
                                                port=proxy_port))
        with (logs / "haproxy.log").open("ab") as out:
            self.haproxy = subprocess.Popen([haproxy_bin, "-db", "-f", str(config)], stdout=out,
                                            stderr=subprocess.STDOUT)
        self.base_url = f"http://{PROXY_LISTEN}:{proxy_port}"
        wait_http_ok(self.base_url + "/ready", timeout_s=30, process=self.haproxy)
        say(f"haproxy {self.base_url} -> {', '.join(n.url or '' for n in self.apis)}; "
            f"{len(self.issuers)} issuance workers, {len(self.dispatchers)} dispatchers, {len(self.jobs)} jobs "
            f"workers (job lease {JOB_LEASE_S:.0f} s)")

    def _outside_parties(self, env: dict[str, str], logs: Path, codes: tuple[str, ...]) -> dict[str, str]:
        """The sandbox bank, identity provider and drand relay, started as outside parties: the
        nodes reach them only through the addresses, keys and issuer their settings name."""
        bank_port, relay_port, idp_port = free_port(), free_port(), free_port()
        self.bank_api_key = secrets.token_urlsafe(24)
        self.bank_url = f"http://127.0.0.1:{bank_port}"
        self.relay_url = f"http://127.0.0.1:{relay_port}"
        idp_url = f"http://127.0.0.1:{idp_port}"
        idp = spawn("sandbox-idp", idp_command("127.0.0.1", idp_port, self.root / "idp", ISSUER), env,
                    logs / "sandbox-idp.log")
        bank = spawn("sandbox-bank", [sys.executable, "-m", "sandbox.bank", "--host", "127.0.0.1",
                                      "--port", str(bank_port), "--data-dir", str(self.root / "bank"),
                                      "--banks", ",".join(codes), "--api-key", self.bank_api_key],
                     env, logs / "bank.log")
        relay = spawn("drand-relay", [sys.executable, "-m", "sandbox.drand_relay", "--host", "127.0.0.1",
                                      "--port", str(relay_port)], env, logs / "drand-relay.log")
        self.others += [bank, relay, idp]
        wait_http_ok(idp_url + "/health", process=idp.process)
        wait_http_ok(self.bank_url + "/health", process=bank.process)
        wait_http_ok(self.relay_url + "/health", process=relay.process)
        # Each bank's response key, pinned from what the bank handed over (here: its /keys).
        self.bank_public_key = asyncio.run(fetch_sandbox_public_key(self.bank_url))
        return {"STIMULUS_BANKS": ",".join(f"{code}={self.bank_url}" for code in codes),
                "STIMULUS_IDP_ISSUER": ISSUER, "STIMULUS_IDP_AUDIENCE": AUDIENCE,
                "STIMULUS_IDP_DISCOVERY_URL": f"{idp_url}/.well-known/openid-configuration",
                "STIMULUS_DRAND_RELAYS": self.relay_url}

    def _secret_files(self, codes: tuple[str, ...]) -> dict[str, str]:
        """The deployment's secrets, one file each, the same files for every node."""
        directory = self.root / "secrets-mounted"
        directory.mkdir(parents=True, exist_ok=True)
        assert self.redis is not None and self.redis.password and self.redis.sentinel_password
        contents = {
            "STIMULUS_PEPPER_FILE": secrets.token_bytes(32).hex(),
            "STIMULUS_SERVICE_KEY_FILE": SigningKey.generate().seed_bytes().hex(),
            "STIMULUS_BANK_API_KEY_FILE": self.bank_api_key,
            "STIMULUS_BANK_PUBLIC_KEYS_FILE": "\n".join(f"{code}:{self.bank_public_key.hex()}" for code in codes),
            "REDIS_PASSWORD_FILE": self.redis.password,
            "REDIS_SENTINEL_PASSWORD_FILE": self.redis.sentinel_password,
        }
        files: dict[str, str] = {}
        for name, content in contents.items():
            path = directory / name.removesuffix("_FILE").lower()
            path.write_text(content + "\n")
            path.chmod(0o400)
            files[name] = str(path)
        return files

    @property
    def direct_url(self) -> str:
        """PostgreSQL itself, not through PgBouncer: for the harness's own checks."""
        assert self.running is not None and self.running.settings.database_url
        return self.running.settings.database_url

    def stop(self) -> None:
        for node in (*self.jobs, *self.dispatchers, *self.issuers, *self.apis):
            node.stop()
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(10)
        for child in self.others:
            child.stop()
        if self.bouncer is not None:
            self.bouncer.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.running is not None:
            self.running.stop()
