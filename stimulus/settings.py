"""Typed settings, read once from the environment at start-up and passed in.

Every setting has an environment variable (listed in the README) and a default that suits a
single-machine run. Secrets that are not given are generated into the state directory on first
start, so a second start reuses them; their values never appear in logs or reprs.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from stimulus.signing import SigningKey, load_or_create_signing_key

DB_POOLERS = ("none", "pgbouncer")


class Secret:
    """A value that must never be printed: its repr is masked."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be a boolean, got {raw!r}")


def _load_or_create_secret(path: Path, size: int = 32) -> Secret:
    if path.exists():
        return Secret(bytes.fromhex(path.read_text().strip()))
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(size)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Secret(bytes.fromhex(path.read_text().strip()))
    with os.fdopen(fd, "w") as fh:
        fh.write(value.hex())
    return Secret(value)


def _banks(raw: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """`ICBC,CCB=https://ccb.example/wallet` -> codes, and the URLs given per code."""
    codes: list[str] = []
    urls: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        code, _, url = item.partition("=")
        codes.append(code.strip())
        if url.strip():
            urls[code.strip()] = url.strip()
    return tuple(codes), urls


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    database_url: str | None
    redis_url: str | None
    host: str
    port: int
    workers: int
    sandbox: bool
    pepper: Secret
    service_key: SigningKey
    idp_key: SigningKey
    idp_public_keys: dict[str, bytes]
    idp_issuer: str
    idp_audience: str
    db_pool_min: int
    db_pool_max: int
    db_command_timeout_s: int
    max_body_bytes: int
    rate_limit_identity_per_min: int
    rate_limit_address_per_min: int
    rate_limit_exempt_addresses: frozenset[str]
    group_commit_max_batch: int
    group_commit_max_wait_ms: int
    draw_parallel_from: int
    log_level: str
    bank_url: str | None
    bank_port: int
    # Operator banks: codes served at `bank_url` unless given their own URL, the API key, and
    # each bank's pinned Ed25519 response key (the sandbox's is read from its /keys when absent).
    bank_codes: tuple[str, ...] = ("ICBC", "CCB", "BOC")
    bank_urls: dict[str, str] = field(default_factory=dict)
    bank_api_key: Secret = field(default_factory=lambda: Secret(b"sandbox-api-key"))
    bank_public_keys: dict[str, bytes] = field(default_factory=dict)
    # What sits between us and PostgreSQL: "none", or "pgbouncer" (transaction mode), and the
    # server's own address for what must bypass the pooler (migrations).
    db_pooler: str = "none"
    database_direct_url: str | None = None
    # Load balancers whose Forwarded / X-Forwarded-For headers name the client: CIDRs, checked and
    # normalised at load (strings, so the settings stay plain data).
    trusted_proxies: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None

    @property
    def migration_database_url(self) -> str | None:
        return self.database_direct_url or self.database_url


def _networks(name: str, raw: str) -> tuple[str, ...]:
    """`10.0.0.0/8, 192.0.2.7` -> `("10.0.0.0/8", "192.0.2.7/32")` (a bare address is a network of one)."""
    try:
        return tuple(str(ipaddress.ip_network(item.strip(), strict=False))
                     for item in raw.split(",") if item.strip())
    except ValueError as exc:
        raise ValueError(f"{name} must list CIDRs or addresses: {exc}") from exc


def _pooler(raw: str) -> str:
    pooler = raw.strip().lower() or "none"
    if pooler not in DB_POOLERS:
        raise ValueError(f"STIMULUS_DB_POOLER must be one of {', '.join(DB_POOLERS)}, got {raw!r}")
    return pooler


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment)."""
    env = dict(os.environ) if env is None else env
    state_dir = Path(env.get("STIMULUS_STATE_DIR", "./.stimulus")).resolve()
    secrets_dir = state_dir / "secrets"
    pepper_hex = env.get("STIMULUS_PEPPER")
    pepper = (
        Secret(bytes.fromhex(pepper_hex))
        if pepper_hex
        else _load_or_create_secret(secrets_dir / "pepper.hex")
    )
    service_key = load_or_create_signing_key(
        secrets_dir / "service_ed25519.hex", env.get("STIMULUS_SERVICE_KEY")
    )
    idp_key = load_or_create_signing_key(
        secrets_dir / "sandbox_idp_ed25519.hex", env.get("STIMULUS_SANDBOX_IDP_KEY")
    )
    sandbox = _env_bool(env, "STIMULUS_SANDBOX", True)
    idp_public_keys: dict[str, bytes] = {}
    for item in filter(None, env.get("STIMULUS_IDP_PUBLIC_KEYS", "").split(",")):
        kid, _, hex_key = item.partition(":")
        idp_public_keys[kid.strip()] = bytes.fromhex(hex_key.strip())
    if sandbox:
        idp_public_keys.setdefault(idp_key.key_id, idp_key.public_bytes)
    bank_codes, bank_urls = _banks(env.get("STIMULUS_BANKS", "ICBC,CCB,BOC"))
    bank_public_keys = {
        code.strip(): bytes.fromhex(hex_key.strip())
        for code, _, hex_key in (item.partition(":") for item in
                                 filter(None, env.get("STIMULUS_BANK_PUBLIC_KEYS", "").split(",")))
    }
    exempt = frozenset(
        filter(None, (a.strip() for a in env.get("STIMULUS_RATE_LIMIT_EXEMPT", "").split(",")))
    )
    return Settings(
        state_dir=state_dir,
        database_url=env.get("DATABASE_URL") or None,
        redis_url=env.get("REDIS_URL") or None,
        host=env.get("STIMULUS_HOST", "127.0.0.1"),
        port=_env_int(env, "STIMULUS_PORT", 8000),
        workers=_env_int(env, "STIMULUS_WORKERS", 2),
        sandbox=sandbox,
        pepper=pepper,
        service_key=service_key,
        idp_key=idp_key,
        idp_public_keys=idp_public_keys,
        idp_issuer=env.get("STIMULUS_IDP_ISSUER", "sandbox-idp"),
        idp_audience=env.get("STIMULUS_IDP_AUDIENCE", "stimulus"),
        db_pool_min=_env_int(env, "STIMULUS_DB_POOL_MIN", 2),
        db_pool_max=_env_int(env, "STIMULUS_DB_POOL_MAX", 16),
        db_command_timeout_s=_env_int(env, "STIMULUS_DB_COMMAND_TIMEOUT_S", 30),
        max_body_bytes=_env_int(env, "STIMULUS_MAX_BODY_BYTES", 64 * 1024),
        rate_limit_identity_per_min=_env_int(env, "STIMULUS_RATE_LIMIT_IDENTITY_PER_MIN", 30),
        rate_limit_address_per_min=_env_int(env, "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN", 600),
        rate_limit_exempt_addresses=exempt,
        group_commit_max_batch=_env_int(env, "STIMULUS_GROUP_COMMIT_MAX_BATCH", 256),
        group_commit_max_wait_ms=_env_int(env, "STIMULUS_GROUP_COMMIT_MAX_WAIT_MS", 2),
        draw_parallel_from=_env_int(env, "STIMULUS_DRAW_PARALLEL_FROM", 500_000),
        log_level=env.get("STIMULUS_LOG_LEVEL", "INFO"),
        bank_url=env.get("STIMULUS_BANK_URL") or None,
        bank_port=_env_int(env, "STIMULUS_BANK_PORT", 8100),
        bank_codes=bank_codes,
        bank_urls=bank_urls,
        bank_api_key=Secret(env.get("STIMULUS_BANK_API_KEY", "sandbox-api-key").encode()),
        bank_public_keys=bank_public_keys,
        db_pooler=_pooler(env.get("STIMULUS_DB_POOLER", "none")),
        database_direct_url=env.get("DATABASE_DIRECT_URL") or None,
        trusted_proxies=_networks("STIMULUS_TRUSTED_PROXIES", env.get("STIMULUS_TRUSTED_PROXIES", "")),
        extra={k: v for k, v in env.items() if k.startswith("STIMULUS_X_")},
    )

