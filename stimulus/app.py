"""The Litestar application factory: assembles the domain packages' routes and lifespans.

`stimulus/` only assembles: each domain package's `api` module exposes `route_handlers(settings)`
and optionally a `lifespan(services, state)` async context manager, which keeps the domain's own
long-lived objects on the app's state, and `dependencies()`, which hands them to its handlers.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from kernel import approval_routes, db, job_routes
from kernel.auth import authorize_staff
from kernel.contract import ContractJsonPlugin
from kernel.idempotency import IdempotencyStore
from kernel.identity import TokenVerifier
from kernel.input_guard import guard_input
from kernel.metrics_listener import metrics_listener
from kernel.observability import RequestContextMiddleware
from kernel.oidc import IdTokenVerifier, ProviderKeys
from kernel.operator_signin import OperatorSignIn
from kernel.outages import EXCEPTION_HANDLERS as OUTAGE_HANDLERS
from kernel.problems import EXCEPTION_HANDLERS, problem
from kernel.ratelimit import RateLimiter
from kernel.redis_clients import request_client
from kernel.services import Services, get_citizen, get_principal
from kernel.settings import Settings
from stimulus import actions, dashboard

DOMAIN_API_MODULES = ("lottery.api", "wallet_adapter.api", "merchants.api")
REDIS_MAX_CONNECTIONS = 200


@get("/health", include_in_schema=False, sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "live"}


@get("/ready", include_in_schema=False)
async def ready(services: Services) -> Response[Any]:
    try:
        await services.pool.fetchval("SELECT 1")
        await services.redis.ping()
    except Exception as exc:  # any failure means "not ready"
        return problem(503, "not_ready", "Not ready", f"dependency unavailable: {type(exc).__name__}", "")
    return Response({"status": "ready"})


@get("/v1/keys", tags=["public"], summary="The service's Ed25519 public keys (receipts, commitments, bundles)")
async def service_keys(services: Services) -> dict[str, str]:
    key = services.settings.service_key
    return {key.key_id: key.public_bytes.hex()}


async def check_entry(request: Request[Any, Any, Any]) -> None:
    """Every route's entry checks, after routing and before the parameters and body are read: the
    staff token first (a caller without the right one learns 401/403, not what their input lacks),
    then the input guard. One hook rather than two app-wide guards: Litestar copies the route
    handler for each guard it runs, on every request."""
    handler = request.route_handler
    await authorize_staff(request, handler)
    await guard_input(request, handler)


def _domain_modules() -> list[Any]:
    return [importlib.import_module(name) for name in DOMAIN_API_MODULES]


def create_app(settings: Settings) -> Litestar:
    modules = _domain_modules()
    actions.install()  # requests and approvals check each action's preconditions

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if settings.database_url is None or settings.redis_url is None:
            raise RuntimeError("the API needs DATABASE_URL and REDIS_URL (stimulus up sets them)")
        pool = await db.create_pool(settings.database_url, settings.db_pool_min,
                                    settings.db_pool_max, settings.db_command_timeout_s,
                                    pooler=settings.db_pooler, deadline_s=settings.db_request_timeout_s)
        redis = request_client(settings, REDIS_MAX_CONNECTIONS)
        provider_keys = ProviderKeys(settings.idp_discovery_url, settings.idp_issuer,
                                     refetch_floor_s=settings.idp_jwks_refetch_floor_s,
                                     max_age_s=settings.idp_jwks_max_age_s)
        services = Services(
            settings=settings, pool=pool, redis=redis,
            verifier=TokenVerifier(_id_tokens(settings, provider_keys, settings.idp_audience),
                                   settings.pepper.reveal(), settings.idp_clock_skew_s),
            limiter=RateLimiter(redis), idempotency=IdempotencyStore(redis),
            operator_signin=None if settings.operator_oidc_audience is None else OperatorSignIn(
                _id_tokens(settings, provider_keys, settings.operator_oidc_audience),
                settings.operator_role_claim, settings.operator_name_claim),
        )
        app.state.services = services
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(metrics_listener(settings.metrics_host, settings.metrics_port))
                await provider_keys.start()
                stack.push_async_callback(provider_keys.close)
                for module in modules:
                    domain_lifespan = getattr(module, "lifespan", None)
                    if domain_lifespan is not None:
                        await stack.enter_async_context(domain_lifespan(services, app.state))
                # What start-up built lives as long as the process. Frozen, the collector's full
                # passes stop walking it; they were the registration path's slowest 1 %.
                gc.collect()
                gc.freeze()
                yield
        finally:
            gc.unfreeze()  # a process that starts the app again (tests) lets the old one go
            await redis.aclose()
            await pool.close()

    handlers: list[Any] = [health, ready, service_keys, *approval_routes.ROUTES, *job_routes.ROUTES, *dashboard.routes()]
    domain_dependencies: dict[str, Provide] = {}
    for module in modules:
        handlers.extend(module.route_handlers(settings))
        domain_dependencies.update(getattr(module, "dependencies", dict)())

    def current_services() -> Services:
        # Without parameters, so Litestar parses no signature for it on each request.
        services: Services = app.state.services
        return services

    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        dependencies={
            "services": Provide(current_services, sync_to_thread=False),
            "principal": Provide(get_principal),
            "citizen": Provide(get_citizen),
            **domain_dependencies,
        },
        before_request=check_entry,
        exception_handlers={**EXCEPTION_HANDLERS, **OUTAGE_HANDLERS},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="stimulus",
            version="1.0.0",
            description="Citizen, merchant, operator and public APIs of a verifiable stimulus campaign.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger"), ContractJsonPlugin()],
        ),
        debug=False,
    )
    return app


def _id_tokens(settings: Settings, keys: ProviderKeys, audience: str) -> IdTokenVerifier:
    return IdTokenVerifier(keys, audience=audience, algorithms=settings.idp_algorithms,
                           clock_skew_s=settings.idp_clock_skew_s,
                           max_lifetime_s=settings.idp_max_token_lifetime_s)


def create_app_from_env() -> RequestContextMiddleware:
    """Entry point for the ASGI server processes (granian --factory).

    The request-context middleware wraps the whole app rather than sitting in Litestar's stack, so
    requests that match no route (404, 405) get a request id and metrics too.
    """
    from kernel.observability import configure_logging
    from kernel.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    return RequestContextMiddleware(create_app(settings))
