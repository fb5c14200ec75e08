"""Typed settings, read once from the environment at start-up and passed in.

Every setting has an environment variable (listed in the README). Two environments:

* development (`STIMULUS_ENV=development`, the default when both PostgreSQL and Redis are
  embedded): defaults suit a single-machine run, the sandbox parties are mounted and trusted, and
  secrets that are not given are generated into the state directory on first start.
* production (the default as soon as DATABASE_URL or REDIS_URL names a server): nothing from the
  sandbox, no secret generated, no default for anything that decides whom we trust. Every secret
  comes from the environment or from a file (`STIMULUS_PEPPER_FILE`, the container-secrets
  convention), so every node shares it; what is missing or malformed is named in one
  `ConfigurationError`, and the process does not start.

Secret values never appear in logs or reprs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from kernel.oidc import allowed_algorithms
from kernel.signing import SigningKey, load_or_create_signing_key

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


ENVIRONMENTS = ("production", "development")
DEVELOPMENT_BANK_API_KEY = "sandbox-api-key"  # what the sandbox bank accepts unless told otherwise
MIN_PEPPER_BYTES = 32
ED25519_KEY_BYTES = 32


class ConfigurationError(Exception):
    """Everything wrong with the configuration, found in one pass so an operator fixes it in one."""

    def __init__(self, environment: str, problems: list[str]) -> None:
        self.environment = environment
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"refusing to start in {environment}: {len(problems)} setting(s) "
                         f"missing or malformed:\n{listing}")


class _Reader:
    """Reads values from the environment or from `NAME_FILE`, collecting what is wrong."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def value(self, name: str) -> str | None:
        """`NAME`, or the contents of the file `NAME_FILE` names (its trailing newline ignored)."""
        direct, file_name = self.env.get(name) or None, self.env.get(f"{name}_FILE") or None
        if direct is not None and file_name is not None:
            self.problems.append(f"{name} and {name}_FILE: give one, not both")
            return None
        if file_name is None:
            return direct
        try:
            text = Path(file_name).read_text()
        except OSError as exc:
            self.problems.append(f"{name}_FILE: cannot read {file_name} ({exc.strerror or exc})")
            return None
        return text.rstrip("\r\n")

    def hex_bytes(self, name: str, raw: str | None, *, size: int | None = None,
                  min_size: int | None = None) -> bytes | None:
        if raw is None:
            return None
        try:
            value = bytes.fromhex(raw.strip())
        except ValueError:
            self.problems.append(f"{name}: not hexadecimal")
            return None
        if size is not None and len(value) != size:
            self.problems.append(f"{name}: {len(value)} bytes, expected {size} ({2 * size} hex digits)")
            return None
        if min_size is not None and len(value) < min_size:
            self.problems.append(f"{name}: {len(value)} bytes, expected at least {min_size}")
            return None
        return value

    def keys(self, name: str, what: str) -> dict[str, bytes]:
        """`a:HEX,b:HEX` -> {a: key}; each key an Ed25519 public key."""
        found: dict[str, bytes] = {}
        # Commas or line breaks between entries: a file may hold one per line.
        for item in filter(None, re.split(r"[,\s]+", self.value(name) or "")):
            label, sep, hex_key = item.partition(":")
            if not sep or not label.strip():
                self.problems.append(f"{name}: {item[:20]!r} is not {what}:HEX")
                continue
            key = self.hex_bytes(f"{name} ({label.strip()})", hex_key, size=ED25519_KEY_BYTES)
            if key is not None:
                found[label.strip()] = key
        return found


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        seconds = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not 0 < seconds <= 3600:
        raise ValueError(f"{name} must be above 0 and at most 3600 seconds, got {raw!r}")
    return seconds


def _env_bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be a boolean, got {raw!r}")


def _environment(env: dict[str, str]) -> str:
    raw = env.get("STIMULUS_ENV", "").strip().lower()
    if raw:
        if raw not in ENVIRONMENTS:
            raise ConfigurationError(raw, [f"STIMULUS_ENV: {raw!r}, expected production or development"])
        return raw
    # Servers of someone else's (a real deployment) mean production unless said otherwise.
    outside = any(env.get(name) for name in ("DATABASE_URL", "REDIS_URL", "REDIS_SENTINELS"))
    return "production" if outside else "development"


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


# drand's public HTTP relays (League of Entropy members and Cloudflare), asked in this order.
PUBLIC_DRAND_RELAYS = ("https://api.drand.sh", "https://api2.drand.sh", "https://api3.drand.sh",
                       "https://drand.cloudflare.com")


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    database_url: str | None
    redis_url: str | None
    host: str
    port: int
    workers: int
    environment: str  # "production" or "development"
    pepper: Secret
    service_key: SigningKey
    # The city's OpenID Connect provider (in development: the sandbox one at idp_port).
    idp_issuer: str
    idp_audience: str
    idp_discovery_url: str
    idp_algorithms: tuple[str, ...]
    idp_clock_skew_s: int
    idp_max_token_lifetime_s: int
    idp_jwks_refetch_floor_s: int
    idp_jwks_max_age_s: int
    idp_port: int
    sandbox_idp_dir: Path
    # Operators sign in with the provider's ID tokens too when an audience is configured.
    operator_oidc_audience: str | None
    operator_role_claim: str
    operator_name_claim: str
    db_pool_min: int
    db_pool_max: int
    db_command_timeout_s: int
    # The API's bound on database work in one request (waiting for a connection, then using it).
    db_request_timeout_s: float
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
    bank_api_key: Secret = field(default_factory=lambda: Secret(DEVELOPMENT_BANK_API_KEY.encode()))
    bank_public_keys: dict[str, bytes] = field(default_factory=dict)
    # What sits between us and PostgreSQL: "none", or "pgbouncer" (transaction mode), and the
    # server's own address for what must bypass the pooler (migrations).
    db_pooler: str = "none"
    database_direct_url: str | None = None
    # Load balancers whose Forwarded / X-Forwarded-For headers name the client: CIDRs, checked and
    # normalised at load (strings, so the settings stay plain data).
    trusted_proxies: tuple[str, ...] = ()
    # drand relays asked for the beacon round, in order, each within `drand_timeout_ms`.
    drand_relays: tuple[str, ...] = PUBLIC_DRAND_RELAYS
    drand_timeout_ms: int = 5000
    extra: dict[str, str] = field(default_factory=dict)
    # Prometheus metrics on a listener of their own, never on the API's port (0: none).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    # Each worker's own /health, /ready and /metrics listener, on metrics_host (0: none).
    worker_http_port: int = 0
    # Redis through Sentinel: the sentinels' addresses and the name of the primary they watch
    # (then `redis_url` only names them, for display), and the passwords of Redis and of the
    # sentinels when they ask for one.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    redis_password: Secret | None = None
    redis_sentinel_password: Secret | None = None

    @property
    def sandbox(self) -> bool:
        """True only in development: mount the sandbox parties' routes and trust their keys."""
        return self.environment == "development"

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


def _sentinels(read: _Reader, env: dict[str, str]) -> tuple[tuple[tuple[str, int], ...], str, str | None]:
    """`REDIS_SENTINELS=h1:26379,h2:26379` and `REDIS_SENTINEL_MASTER` -> the addresses, the
    primary's name, and the URL to show for them (None: no Sentinel)."""
    raw = env.get("REDIS_SENTINELS", "").strip()
    if not raw:
        return (), "", None
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            read.problems.append(f"REDIS_SENTINELS: {item!r} is not host:port")
            continue
        sentinels.append((host.strip("[]"), int(port)))
    master = env.get("REDIS_SENTINEL_MASTER", "").strip()
    if not master:
        read.problems.append("REDIS_SENTINEL_MASTER: the name the sentinels know the primary by")
    url = env.get("REDIS_URL") or ""
    if url and not url.startswith("redis+sentinel://"):
        read.problems.append("REDIS_URL and REDIS_SENTINELS: give one, not both")
    label = "redis+sentinel://" + ",".join(f"{host}:{port}" for host, port in sentinels) + f"/{master}"
    return tuple(sentinels), master, label


def _pooler(raw: str) -> str:
    pooler = raw.strip().lower() or "none"
    if pooler not in DB_POOLERS:
        raise ValueError(f"STIMULUS_DB_POOLER must be one of {', '.join(DB_POOLERS)}, got {raw!r}")
    return pooler


def sandbox_issuer(port: int) -> str:
    """The issuer of the sandbox identity provider serving on `port` of this machine."""
    return f"http://127.0.0.1:{port}"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment).

    Raises `ConfigurationError` naming everything missing or malformed.
    """
    env = dict(os.environ) if env is None else env
    environment = _environment(env)
    production = environment == "production"
    state_dir = Path(env.get("STIMULUS_STATE_DIR", "./.stimulus")).resolve()
    secrets_dir = state_dir / "secrets"
    read = _Reader(env)
    if production and env.get("STIMULUS_SANDBOX"):
        read.problems.append("STIMULUS_SANDBOX: no longer read; sandbox parties exist only with "
                             "STIMULUS_ENV=development")

    pepper_bytes = read.hex_bytes("STIMULUS_PEPPER", read.value("STIMULUS_PEPPER"),
                                  min_size=MIN_PEPPER_BYTES if production else None)
    service_seed = read.hex_bytes("STIMULUS_SERVICE_KEY", read.value("STIMULUS_SERVICE_KEY"),
                                  size=ED25519_KEY_BYTES)
    bank_api_key = read.value("STIMULUS_BANK_API_KEY")
    try:
        idp_algorithms = allowed_algorithms([a.strip() for a in env.get(
            "STIMULUS_IDP_ALGORITHMS", "EdDSA,ES256,RS256").split(",") if a.strip()])
    except ValueError as exc:
        read.problems.append(f"STIMULUS_IDP_ALGORITHMS: {exc}")
        idp_algorithms = ()
    idp_port = _env_int(env, "STIMULUS_IDP_PORT", 8200)
    bank_public_keys = read.keys("STIMULUS_BANK_PUBLIC_KEYS", "BANK_CODE")
    bank_codes, bank_urls = _banks(env.get("STIMULUS_BANKS", "ICBC,CCB,BOC"))
    redis_sentinels, redis_sentinel_master, sentinel_label = _sentinels(read, env)
    redis_password, sentinel_password = read.value("REDIS_PASSWORD"), read.value("REDIS_SENTINEL_PASSWORD")
    bank_url = env.get("STIMULUS_BANK_URL") or None
    idp_issuer, idp_audience = env.get("STIMULUS_IDP_ISSUER"), env.get("STIMULUS_IDP_AUDIENCE")
    if production:
        missing = read.problems
        if pepper_bytes is None and not _given(env, "STIMULUS_PEPPER"):
            missing.append(f"STIMULUS_PEPPER or STIMULUS_PEPPER_FILE: the pepper that keys id_hmac "
                           f"({MIN_PEPPER_BYTES}+ random bytes as hex, the same on every node)")
        if service_seed is None and not _given(env, "STIMULUS_SERVICE_KEY"):
            missing.append("STIMULUS_SERVICE_KEY or STIMULUS_SERVICE_KEY_FILE: the service's Ed25519 "
                           "signing key (a 32-byte seed as hex, the same on every node)")
        missing.extend(_identity_provider_problems(env))
        discovery = env.get("STIMULUS_IDP_DISCOVERY_URL")
        if discovery and not discovery.startswith(("https://", "http://127.0.0.1:", "http://localhost:")):
            missing.append("STIMULUS_IDP_DISCOVERY_URL: must be an https:// URL "
                           "(or http:// to a proxy on this machine's loopback)")
        if not env.get("STIMULUS_BANKS"):
            missing.append("STIMULUS_BANKS: the operator banks' codes, each CODE=URL")
        for code in bank_codes if env.get("STIMULUS_BANKS") else ():
            if code not in bank_urls and bank_url is None:
                missing.append(f"bank {code}: no URL (STIMULUS_BANKS={code}=https://... or STIMULUS_BANK_URL)")
            if code not in bank_public_keys:
                missing.append(f"bank {code}: no pinned response key (STIMULUS_BANK_PUBLIC_KEYS "
                               f"or STIMULUS_BANK_PUBLIC_KEYS_FILE: {code}:HEX)")
        if bank_api_key is None and not _given(env, "STIMULUS_BANK_API_KEY"):
            missing.append("STIMULUS_BANK_API_KEY or STIMULUS_BANK_API_KEY_FILE: the key we present to the banks")
    if read.problems:
        raise ConfigurationError(environment, read.problems)

    if production:
        assert pepper_bytes is not None and service_seed is not None and bank_api_key is not None
        pepper = Secret(pepper_bytes)
        service_key = SigningKey.from_seed(service_seed)
    else:
        pepper = (Secret(pepper_bytes) if pepper_bytes is not None
                  else _load_or_create_secret(secrets_dir / "pepper.hex"))
        service_key = (SigningKey.from_seed(service_seed) if service_seed is not None
                       else load_or_create_signing_key(secrets_dir / "service_ed25519.hex"))
        bank_api_key = bank_api_key or DEVELOPMENT_BANK_API_KEY
        # The sandbox provider that stimulus up starts is the issuer unless one is named.
        idp_issuer, idp_audience = idp_issuer or sandbox_issuer(idp_port), idp_audience or "stimulus"
    idp_issuer = (idp_issuer or "").rstrip("/")
    exempt = frozenset(
        filter(None, (a.strip() for a in env.get("STIMULUS_RATE_LIMIT_EXEMPT", "").split(",")))
    )
    return Settings(
        state_dir=state_dir,
        database_url=env.get("DATABASE_URL") or None,
        redis_url=sentinel_label or env.get("REDIS_URL") or None,
        host=env.get("STIMULUS_HOST", "127.0.0.1"),
        port=_env_int(env, "STIMULUS_PORT", 8000),
        workers=_env_int(env, "STIMULUS_WORKERS", 2),
        environment=environment,
        pepper=pepper,
        service_key=service_key,
        idp_issuer=idp_issuer,
        idp_audience=idp_audience or "",
        idp_discovery_url=env.get("STIMULUS_IDP_DISCOVERY_URL")
        or f"{idp_issuer}/.well-known/openid-configuration",
        idp_algorithms=idp_algorithms,
        idp_clock_skew_s=_env_int(env, "STIMULUS_IDP_CLOCK_SKEW_S", 60),
        idp_max_token_lifetime_s=_env_int(env, "STIMULUS_IDP_MAX_TOKEN_LIFETIME_S", 24 * 3600),
        idp_jwks_refetch_floor_s=_env_int(env, "STIMULUS_IDP_JWKS_REFETCH_FLOOR_S", 30),
        idp_jwks_max_age_s=_env_int(env, "STIMULUS_IDP_JWKS_MAX_AGE_S", 300),
        idp_port=idp_port,
        sandbox_idp_dir=Path(env.get("STIMULUS_SANDBOX_IDP_DIR") or state_dir / "sandbox-idp").resolve(),
        operator_oidc_audience=env.get("STIMULUS_OPERATOR_OIDC_AUDIENCE") or None,
        operator_role_claim=env.get("STIMULUS_OPERATOR_ROLE_CLAIM", "stimulus_role"),
        operator_name_claim=env.get("STIMULUS_OPERATOR_NAME_CLAIM", "preferred_username"),
        db_pool_min=_env_int(env, "STIMULUS_DB_POOL_MIN", 2),
        db_pool_max=_env_int(env, "STIMULUS_DB_POOL_MAX", 16),
        db_command_timeout_s=_env_int(env, "STIMULUS_DB_COMMAND_TIMEOUT_S", 30),
        db_request_timeout_s=_env_seconds(env, "STIMULUS_DB_REQUEST_TIMEOUT_S", 1.5),
        max_body_bytes=_env_int(env, "STIMULUS_MAX_BODY_BYTES", 64 * 1024),
        rate_limit_identity_per_min=_env_int(env, "STIMULUS_RATE_LIMIT_IDENTITY_PER_MIN", 30),
        rate_limit_address_per_min=_env_int(env, "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN", 600),
        rate_limit_exempt_addresses=exempt,
        group_commit_max_batch=_env_int(env, "STIMULUS_GROUP_COMMIT_MAX_BATCH", 256),
        group_commit_max_wait_ms=_env_int(env, "STIMULUS_GROUP_COMMIT_MAX_WAIT_MS", 2),
        draw_parallel_from=_env_int(env, "STIMULUS_DRAW_PARALLEL_FROM", 500_000),
        log_level=env.get("STIMULUS_LOG_LEVEL", "INFO"),
        bank_url=bank_url,
        bank_port=_env_int(env, "STIMULUS_BANK_PORT", 8100),
        bank_codes=bank_codes,
        bank_urls=bank_urls,
        bank_api_key=Secret(bank_api_key.encode()),
        bank_public_keys=bank_public_keys,
        db_pooler=_pooler(env.get("STIMULUS_DB_POOLER", "none")),
        database_direct_url=env.get("DATABASE_DIRECT_URL") or None,
        trusted_proxies=_networks("STIMULUS_TRUSTED_PROXIES", env.get("STIMULUS_TRUSTED_PROXIES", "")),
        drand_relays=tuple(filter(None, (r.strip() for r in env.get("STIMULUS_DRAND_RELAYS", "").split(","))))
        or PUBLIC_DRAND_RELAYS,
        drand_timeout_ms=_env_int(env, "STIMULUS_DRAND_TIMEOUT_MS", 5000),
        extra={k: v for k, v in env.items() if k.startswith("STIMULUS_X_")},
        metrics_host=env.get("STIMULUS_METRICS_HOST") or env.get("STIMULUS_HOST", "127.0.0.1"),
        metrics_port=_env_int(env, "STIMULUS_METRICS_PORT", 9464),
        worker_http_port=_env_int(env, "STIMULUS_WORKER_HTTP_PORT", 0),
        redis_sentinels=redis_sentinels,
        redis_sentinel_master=redis_sentinel_master,
        redis_password=Secret(redis_password.encode()) if redis_password else None,
        redis_sentinel_password=Secret(sentinel_password.encode()) if sentinel_password else None,
    )



def _given(env: dict[str, str], name: str) -> bool:
    """Whether `name` was given at all (a malformed value is already named as such)."""
    return bool(env.get(name) or env.get(f"{name}_FILE"))


def _identity_provider_problems(env: dict[str, str]) -> list[str]:
    """What production needs to verify citizens' identity tokens.

    The issuer and audience every token is checked against; the provider's keys come from its
    discovery document (by default under the issuer), so the issuer must be an https:// URL.
    """
    missing = []
    issuer = env.get("STIMULUS_IDP_ISSUER")
    if not issuer:
        missing.append("STIMULUS_IDP_ISSUER: the identity provider's issuer (the tokens' iss, an "
                       "https:// URL whose /.well-known/openid-configuration names its keys)")
    elif not issuer.startswith("https://"):
        missing.append(f"STIMULUS_IDP_ISSUER: {issuer!r} is not an https:// URL")
    if not env.get("STIMULUS_IDP_AUDIENCE"):
        missing.append("STIMULUS_IDP_AUDIENCE: the audience our tokens are issued for (their aud)")
    return missing
