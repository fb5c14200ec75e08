"""The image's entrypoint, run outside a container: every command line the manifests give a pod,
with the environment and secret files they give it, against the test session's PostgreSQL and
Redis, in production mode and with the sandbox package unimportable, as in the image.

Each command must start (migrate applies and exits 0, the API answers /ready, a worker answers
/health, /ready and /metrics on its own listener), and each must refuse to start, with
the settings' one message naming everything missing, when the bank and identity-provider
settings are left out.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kernel.embedded import free_port
from kernel.settings import ConfigurationError, load_settings
from tests.conftest import Stack
from tests.deploy.artefacts import DEPLOY, OVERLAY, cli_has, render

# In the image the sandbox is not installed: find_spec("sandbox") is None and importing it fails.
NO_SANDBOX = '''
import importlib.abc, sys

class _NoSandbox(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sandbox" or name.startswith("sandbox."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoSandbox())
'''


def _public_hex() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _commands() -> dict[str, list[str]]:
    """Every distinct command line a pod or compose service runs, with the env of the first."""
    found: dict[str, list[str]] = {}
    for resource in render(OVERLAY):
        if resource["kind"] in {"Deployment", "Job"}:
            args = resource["spec"]["template"]["spec"]["containers"][0]["args"]
            found.setdefault(" ".join(args), args)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for service in compose["services"].values():
        if service.get("image") == "stimulus:latest":
            found.setdefault(" ".join(service["command"]), service["command"])
    return found


COMMANDS = _commands()


@pytest.fixture(scope="module")
def pod_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the manifests give a pod, its secret files written with fresh values and
    its outside addresses pointed at this machine."""
    tmp = tmp_path_factory.mktemp("pod")
    resources = render(OVERLAY)
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    container = next(r for r in resources if r["kind"] == "Deployment"
                     and r["metadata"]["name"] == "stimulus-worker-issuance"
                     )["spec"]["template"]["spec"]["containers"][0]
    values = {
        "pepper": secrets.token_hex(32),
        "service-key": secrets.token_hex(32),
        "bank-api-key": secrets.token_urlsafe(24),
        "bank-public-keys": ",".join(f"{code}:{_public_hex()}" for code in ("ICBC", "CCB", "BOC")),
        "idp-public-keys": f"city-1:{_public_hex()}",
        "redis-password": secrets.token_urlsafe(24),
    }
    env: dict[str, str] = dict(config)
    for variable in container["env"]:
        if variable["name"].endswith("_FILE"):
            key = variable["value"].rsplit("/", 1)[1]
            path = tmp / key
            path.write_text(values[key] + "\n")
            path.chmod(0o400)
            env[variable["name"]] = str(path)
        elif "value" in variable:
            env[variable["name"]] = variable["value"]
    blocker = tmp / "image-site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_SANDBOX)
    # The session's Redis is one server without a password: it stands for the Sentinels' primary
    # (tests/redis_ha runs the real thing).
    for name in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_PASSWORD_FILE"):
        assert env.pop(name), name
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: no traffic leaves the machine
    env.update({
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")])),
        "DATABASE_URL": stack.database_url,
        "DATABASE_DIRECT_URL": stack.database_url,
        "REDIS_URL": stack.redis_url,
        "STIMULUS_STATE_DIR": str(tmp / "state"),
        "STIMULUS_HOST": "127.0.0.1",
        "STIMULUS_METRICS_HOST": "127.0.0.1",
        "STIMULUS_WORKERS": "1",
        "STIMULUS_LOG_LEVEL": "WARNING",
        "STIMULUS_BANKS": ",".join(f"{code}={closed}" for code in ("ICBC", "CCB", "BOC")),
        "STIMULUS_DRAND_RELAYS": closed,
    })
    assert env["STIMULUS_ENV"] == "production" and env["STIMULUS_DB_POOLER"] == "pgbouncer"
    return env


def _entrypoint() -> str:
    return str(Path(sys.executable).parent / "stimulus")


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([_entrypoint(), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _wait_ok(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not answering 200 after {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        _stop(process)


@pytest.mark.parametrize("args", list(COMMANDS.values()), ids=list(COMMANDS))
def test_command_starts_in_production(args: list[str], pod_env: dict[str, str], tmp_path: Path,
                                      running: list[subprocess.Popen[bytes]]) -> None:
    assert cli_has(args), args
    env = dict(pod_env)
    log = tmp_path / "out.log"
    if args == ["migrate"]:
        result = subprocess.run([_entrypoint(), *args], env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "applied 0 migration(s): none pending" in result.stdout + result.stderr
        return
    port = free_port()
    env.update({"STIMULUS_PORT": str(port), "STIMULUS_METRICS_PORT": str(free_port()),
                "STIMULUS_WORKER_HTTP_PORT": str(port)})
    process = _start(args, env, log)
    running.append(process)
    if args[0] == "serve":
        _wait_ok(f"http://127.0.0.1:{port}/ready", process, log)
    else:
        _wait_ok(f"http://127.0.0.1:{port}/health", process, log)
        _wait_ok(f"http://127.0.0.1:{port}/ready", process, log)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("args", list(COMMANDS.values()), ids=list(COMMANDS))
def test_command_refuses_without_bank_and_identity_provider(
        args: list[str], pod_env: dict[str, str]) -> None:
    assert cli_has(args), args
    env = {k: v for k, v in pod_env.items()
           if k not in {"STIMULUS_BANKS", "STIMULUS_BANK_PUBLIC_KEYS_FILE", "STIMULUS_IDP_ISSUER"}}
    with pytest.raises(ConfigurationError) as refused:
        load_settings(env)
    assert len(refused.value.problems) >= 2
    result = subprocess.run([_entrypoint(), *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert f"Error: {refused.value}" in result.stderr, result.stderr[-3000:]
    assert "STIMULUS_BANKS" in result.stderr and "STIMULUS_IDP_ISSUER" in result.stderr
    assert "Traceback" not in result.stderr


def test_sandbox_is_unimportable_for_the_commands(pod_env: dict[str, str]) -> None:
    # The commands above ran with this environment: had any needed the sandbox, they had failed.
    result = subprocess.run([sys.executable, "-c", "import sandbox.bank"], env=pod_env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'sandbox'" in result.stderr
