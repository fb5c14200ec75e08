# syntax=docker/dockerfile:1
# The stimulus image: one image, every role. The command picks the role:
#   stimulus serve | stimulus worker <role> | stimulus migrate
# Production only: the sandbox servers (bank, identity provider, drand relay) are not in it.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY kernel ./kernel
COPY stimulus ./stimulus
COPY lottery ./lottery
COPY wallet_adapter ./wallet_adapter
COPY merchants ./merchants
# Build from the product's packages only: sandbox/, bench/ and loadtests/ are not copied, so
# the wheel cannot carry them (setuptools' find only includes what exists).
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels "$(ls /wheels/stimulus-*.whl)"

# The sandbox's outside parties (bank), for a rehearsal with `docker compose --profile sandbox`
# only: a separate target (`--target sandbox`), never the product image, which is the last
# stage and so the default.
FROM python:3.11-slim-bookworm AS sandbox
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip install . \
 && useradd --system --uid 10002 --create-home sandbox
USER 10002

FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STIMULUS_ENV=production STIMULUS_HOST=0.0.0.0 STIMULUS_METRICS_HOST=0.0.0.0 \
    STIMULUS_STATE_DIR=/var/lib/stimulus
RUN groupadd --system --gid 10001 stimulus \
 && useradd --system --uid 10001 --gid stimulus --home-dir /var/lib/stimulus --create-home \
      --shell /usr/sbin/nologin stimulus
COPY --from=build /wheels /wheels
# Fail the build if anything of the sandbox slipped into the wheel. Versions are pinned by the
# wheelhouse itself (--no-index: nothing but what the build stage resolved).
# hadolint ignore=DL3013
RUN pip install --no-index --find-links /wheels stimulus \
 && rm -rf /wheels \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sandbox') is not None)"
USER 10001:10001
WORKDIR /var/lib/stimulus
# API, worker health/readiness listener, metrics.
EXPOSE 8000 8081 9464
# No HEALTHCHECK: the image runs under Kubernetes (or compose), whose probes call /health and
# /ready on each role's own port; a Docker HEALTHCHECK would need curl in the image and a port
# that differs per role.
ENTRYPOINT ["stimulus"]
CMD ["serve"]
