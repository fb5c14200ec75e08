"""`stimulus up`: one process that starts and watches everything a one-machine campaign needs.

Children run in their own process groups so Ctrl-C reaches the supervisor only, which then stops
them in reverse order (workers, API, sandbox servers) before the embedded databases. A child or an
embedded PostgreSQL or Redis that dies is started again, a bounded number of times; the API and
the workers reconnect by themselves.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import time
from dataclasses import replace
from typing import Any

from kernel.embedded import EmbeddedPostgres, free_port
from kernel.servers import RunningStack, migrate_sync, start_stack
from kernel.settings import Settings, sandbox_issuer
from stimulus.stack import (
    ChildProcess,
    api_command,
    child_env,
    drand_relay_command,
    prepare_metrics_dir,
    spawn,
    wait_http_ok,
)

log = logging.getLogger("stimulus.supervisor")

DOMAIN_API_MODULES = ("lottery.api", "wallet_adapter.api", "merchants.api")
MAX_RESTARTS = 5


class Supervisor:
    def __init__(self, settings: Settings, api_port: int | None = None, api_workers: int | None = None,
                 with_bank: bool = True) -> None:
        self.settings = settings
        self.api_port = api_port or settings.port
        self.api_workers = api_workers or settings.workers
        self.with_bank = with_bank
        self.stack: RunningStack | None = None
        self.children: list[tuple[ChildProcess, list[str], dict[str, str]]] = []
        self.restarts: dict[str, int] = {}
        self.bank_url: str | None = None
        self.drand_relay_url: str | None = None
        self.idp_issuer: str | None = None

    def _logs(self) -> Any:
        path = self.settings.state_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> ChildProcess:
        child = spawn(name, command, env, self._logs() / f"{name}.log")
        self.children.append((child, command, env))
        return child

    def start(self) -> None:
        self.stack = start_stack(self.settings, need_redis=True)
        settings = self.stack.settings
        migrate_sync(settings)
        extra: dict[str, str] = {}
        # The codes STIMULUS_BANKS names without a URL of their own are the sandbox's to serve.
        sandbox_codes = [c for c in settings.bank_codes if c not in settings.bank_urls]
        if (self.with_bank and settings.sandbox and settings.bank_url is None and sandbox_codes
                and importlib.util.find_spec("sandbox.bank") is not None):
            port = self.settings.bank_port or free_port()
            bank = self._spawn("sandbox-bank", [
                sys.executable, "-m", "sandbox.bank", "--host", "127.0.0.1",
                "--port", str(port), "--data-dir", str(settings.state_dir / "bank"),
                "--banks", ",".join(sandbox_codes),
            ], child_env(settings))
            self.bank_url = f"http://127.0.0.1:{port}"
            wait_http_ok(self.bank_url + "/health", process=bank.process)
            extra["STIMULUS_BANK_URL"] = self.bank_url
        elif settings.bank_url:
            self.bank_url = settings.bank_url
        if settings.sandbox and importlib.util.find_spec("sandbox.drand_relay") is not None:
            extra["STIMULUS_DRAND_RELAYS"] = self._start_drand_relay(settings)
        extra.update(self._start_sandbox_idp(settings))
        self.stack.settings = settings = replace(
            settings, idp_issuer=extra.get("STIMULUS_IDP_ISSUER", settings.idp_issuer),
            idp_discovery_url=extra.get("STIMULUS_IDP_DISCOVERY_URL", settings.idp_discovery_url))
        metrics_dir = prepare_metrics_dir(settings)
        env = child_env(settings, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **extra})
        api = self._spawn("api", api_command(settings, self.api_port, self.api_workers), env)
        wait_http_ok(f"http://{settings.host}:{self.api_port}/ready", process=api.process)
        for name, command in worker_commands(settings):
            self._spawn(name, command, env)

    def _start_drand_relay(self, settings: Settings) -> str:
        """Start the sandbox drand relay; returns the relay list with it first, the configured after."""
        port = free_port()
        relay = self._spawn("drand-relay", drand_relay_command(port), child_env(settings))
        self.drand_relay_url = f"http://127.0.0.1:{port}"
        wait_http_ok(self.drand_relay_url + "/health", process=relay.process)
        return ",".join([self.drand_relay_url, *settings.drand_relays])
    def _start_sandbox_idp(self, settings: Settings) -> dict[str, str]:
        """In development, with no provider named, the sandbox one: its issuer for the children."""
        if (not settings.sandbox or settings.idp_issuer != sandbox_issuer(settings.idp_port)
                or importlib.util.find_spec("sandbox.idp") is None):
            return {}
        from sandbox.idp import command

        port = settings.idp_port or free_port()
        issuer = sandbox_issuer(port)
        idp = self._spawn("sandbox-idp", command("127.0.0.1", port, settings.sandbox_idp_dir, issuer),
                          child_env(settings))
        wait_http_ok(issuer + "/health", process=idp.process)
        self.idp_issuer = issuer
        return {"STIMULUS_IDP_ISSUER": issuer,
                "STIMULUS_IDP_DISCOVERY_URL": f"{issuer}/.well-known/openid-configuration"}

    def describe(self) -> list[str]:
        assert self.stack is not None
        s = self.stack.settings
        base = f"http://{s.host}:{self.api_port}"
        lines = [
            f"API            {base}/v1/campaigns",
            f"OpenAPI UI     {base}/schema  (Swagger: {base}/schema/swagger)",
            f"metrics        http://{s.metrics_host}:{s.metrics_port}/metrics" if s.metrics_port
            else "metrics        off (STIMULUS_METRICS_PORT=0)",
            f"health/ready   {base}/health  {base}/ready",
            f"PostgreSQL     {s.database_url}",
            f"Redis          {s.redis_url}",
        ]
        if self.bank_url:
            lines.append(f"sandbox bank   {self.bank_url}")
        if self.drand_relay_url:
            lines.append(f"drand relay    {self.drand_relay_url}  (sandbox chain and recorded quicknet rounds)")
        if self.idp_issuer:
            lines.append(f"sandbox IdP    {self.idp_issuer}  (tokens: stimulus idp token)")
        lines.append(f"logs           {self.settings.state_dir / 'logs'}")
        return lines

    def watch(self) -> None:
        """Restart an embedded server or a child that died, a bounded number of times."""
        self._watch_servers()
        for index, (child, command, env) in enumerate(self.children):
            if child.process.poll() is None:
                continue
            count = self.restarts.get(child.name, 0)
            if count >= MAX_RESTARTS:
                continue
            self.restarts[child.name] = count + 1
            log.warning("%s exited with %s; restarting (%d)", child.name, child.process.returncode, count + 1)
            time.sleep(min(2 ** count, 10))
            replacement = spawn(child.name, command, env, self._logs() / f"{child.name}.log")
            self.children[index] = (replacement, command, env)

    def _watch_servers(self) -> None:
        if self.stack is None:
            return
        for server in self.stack.owned:
            if server.alive():
                continue
            name = "postgres" if isinstance(server, EmbeddedPostgres) else "redis"
            count = self.restarts.get(name, 0)
            if count >= MAX_RESTARTS:
                continue
            log.warning("embedded %s is down; starting it again (%d)", name, count + 1)
            try:
                server.start()
            except (OSError, RuntimeError) as exc:
                # PostgreSQL refuses while the dead server's backends still hold its shared
                # memory; they leave within moments, and the next round tries again. Only a
                # start that worked counts against the bound.
                log.warning("embedded %s did not start yet: %s", name, exc)
                time.sleep(1)
                continue
            self.restarts[name] = count + 1

    def stop(self) -> None:
        for child, _, _ in reversed(self.children):
            child.stop()
        self.children.clear()
        if self.stack is not None:
            self.stack.stop()


def worker_commands(settings: Settings) -> list[tuple[str, list[str]]]:
    """The jobs worker, and the background workers the domain packages declare
    (`worker_roles(settings)` in their api), each as `stimulus worker ROLE`."""
    roles = ["jobs"]
    for name in DOMAIN_API_MODULES:
        declare = getattr(importlib.import_module(name), "worker_roles", None)
        if declare is not None:
            roles.extend(declare(settings))
    return [(role, [sys.executable, "-m", "stimulus.cli", "worker", role]) for role in roles]
