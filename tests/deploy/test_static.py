"""Static checks of the image and the manifests: what `docker build`, `kubectl apply -k` and
Prometheus would refuse or get wrong, caught without a container runtime or a cluster.

kubernetes-validate checks every rendered resource against the Kubernetes API schema (strict:
unknown fields refused); hadolint lints the Dockerfile; the compose file and the alert rules are
held against what the product really has: its commands, the variables it reads, the metrics it
exports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml

from tests.deploy.artefacts import (
    DEPLOY,
    K8S,
    OVERLAY,
    ROOT,
    cli_has,
    containers,
    exported_metrics,
    pod_specs,
    product_env_names,
    render,
    series_names,
)

KUBERNETES_VERSION = "1.30.0"
PROMETHEUS_OWN_SERIES = {"up"}


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _named(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


@pytest.mark.parametrize("directory", [K8S / "base", OVERLAY], ids=["base", "overlay"])
def test_every_rendered_resource_is_valid_kubernetes(directory: Path) -> None:
    resources = render(directory)
    assert len(resources) >= 10
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']}: {exc.message} "
                        f"at {'.'.join(map(str, exc.path))}")


def test_renderer_applies_the_overlay(overlay: list[dict[str, Any]]) -> None:
    api = _named(overlay, "Deployment")["stimulus-api"]
    assert api["spec"]["replicas"] == 4
    assert api["metadata"]["namespace"] == "stimulus"
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.city.example/stimulus:0.1.0"
    # The patch touched the replica count only: the probes survive the merge.
    assert api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/ready"
    config = _named(overlay, "ConfigMap")["stimulus-config"]["data"]
    assert config["STIMULUS_TRUSTED_PROXIES"] == "10.20.0.0/16"
    assert config["STIMULUS_ENV"] == "production"


def test_deployments_have_probes_resources_and_budgets(overlay: list[dict[str, Any]]) -> None:
    deployments = _named(overlay, "Deployment")
    roles = {tuple(d["spec"]["template"]["spec"]["containers"][0]["args"]) for d in deployments.values()}
    assert roles >= {("serve",), ("worker", "issuance"), ("worker", "issuance-dispatcher"),
                     ("worker", "notifications"), ("worker", "reconcile"), ("worker", "jobs")}
    budgets = _named(overlay, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready", name
        assert container["livenessProbe"]["httpGet"]["port"] in ports, name
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, name
        assert container["securityContext"]["runAsNonRoot"] is True, name
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert deployment["spec"]["template"]["metadata"]["labels"].items() >= labels.items()
        scraped = int(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
        assert scraped in ports.values(), name
        assert [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"] == labels], \
            f"{name} has no PodDisruptionBudget"
    hpa = _named(overlay, "HorizontalPodAutoscaler")["stimulus-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    job = _named(overlay, "Job")["stimulus-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_services_select_pods(overlay: list[dict[str, Any]]) -> None:
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in _named(overlay, "Deployment").values()]
    for name, service in _named(overlay, "Service").items():
        selector = service["spec"]["selector"]
        assert any(labels.items() >= selector.items() for labels in pod_labels), name


def test_secrets_are_templates_and_every_reference_resolves(overlay: list[dict[str, Any]]) -> None:
    secrets = _named(overlay, "Secret")
    configs = _named(overlay, "ConfigMap")
    for name, secret in secrets.items():
        for key, value in secret["stringData"].items():
            assert "REPLACE_WITH" in value, f"{name}.{key} looks like a real value"
    for _, spec in pod_specs(overlay):
        mounted = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configs
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], variable["name"]
                if variable["name"].endswith("_FILE"):
                    directory, key = variable["value"].rsplit("/", 1)
                    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
                    secret = secrets[mounted[mount["name"]]["secret"]["secretName"]]
                    assert key in secret["stringData"], variable["name"]


def test_manifests_set_only_variables_the_product_reads(
        overlay: list[dict[str, Any]], compose: dict[str, Any]) -> None:
    known = product_env_names()
    named: set[str] = set()
    for container in containers(overlay):
        named.update(v["name"] for v in container.get("env", []))
    for config in _named(overlay, "ConfigMap").values():
        named.update(config["data"])
    for service in _stimulus_services(compose).values():
        named.update(service["environment"])
    assert named - known == set()
    # The settings production refuses to start without are all given.
    for needed in ("DATABASE_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "STIMULUS_PEPPER_FILE", "STIMULUS_SERVICE_KEY_FILE",
                   "STIMULUS_BANKS", "STIMULUS_BANK_API_KEY_FILE", "STIMULUS_BANK_PUBLIC_KEYS_FILE",
                   "STIMULUS_IDP_ISSUER", "STIMULUS_IDP_AUDIENCE"):
        assert needed in named, needed


def _stimulus_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "stimulus:latest"}


def _commands(overlay: list[dict[str, Any]], compose: dict[str, Any]) -> set[tuple[str, ...]]:
    found = {tuple(c["args"]) for c in containers(overlay)}
    found.update(tuple(s["command"]) for s in _stimulus_services(compose).values())
    return found


def test_compose_services_are_wired(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "pgbouncer", "redis-primary", "redis-replica", "sentinel-1", "sentinel-2",
            "sentinel-3", "api-1", "api-2", "lb", "migrate", "bank", "drand-relay"} <= set(services)
    stimulus = _stimulus_services(compose)
    assert {tuple(s["command"]) for s in stimulus.values()} >= {
        ("serve",), ("migrate",), ("worker", "issuance"), ("worker", "issuance-dispatcher"),
        ("worker", "notifications"), ("worker", "reconcile"), ("worker", "jobs")}
    for name, service in services.items():
        assert service.get("image"), f"{name} has no image"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name} uses unknown secret {secret}"
        for volume in service.get("volumes", []):
            if ":" not in volume:
                continue  # an anonymous volume of the container's own
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses unknown volume {source}"
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_FILE"):
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in service.get("secrets", []), f"{name}: {variable} names no secret it has"
    # The sandbox parties run from the sandbox image only, and only in the sandbox profile.
    sandboxed = {n for n, s in services.items() if s["image"] == "stimulus-sandbox:latest"}
    assert sandboxed == {n for n, s in services.items() if "sandbox" in s.get("profiles", [])}
    assert sandboxed >= {"bank", "idp", "drand-relay"}
    for name in sandboxed:
        module = next(a for a in [*services[name].get("entrypoint", []), *services[name]["command"]]
                      if "sandbox." in a).split("sandbox.")[1].split()[0]
        assert (ROOT / "sandbox" / f"{module}.py").is_file(), name
    assert all(s["environment"]["STIMULUS_ENV"] == "production" for s in stimulus.values())
    haproxy = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    assert set(re.findall(r"server \S+ (\S+):8000", haproxy)) == {"api-1", "api-2"}


@pytest.mark.parametrize("directory", ["kernel", "stimulus", "lottery", "wallet_adapter", "merchants"])
def test_the_image_builds_the_product_packages_only(directory: str) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    build = dockerfile.split(" AS sandbox")[0]
    assert f"COPY {directory} ./{directory}" in build
    assert "COPY sandbox" not in build and "COPY . " not in build
    runtime = dockerfile.split(" AS runtime")[1]
    assert 'ENTRYPOINT ["stimulus"]' in runtime
    assert re.search(r"^USER 10001", runtime, re.M)
    assert "find_spec('sandbox') is not None" in runtime


def test_commands_name_the_cli(overlay: list[dict[str, Any]], compose: dict[str, Any]) -> None:
    missing = sorted(" ".join(c) for c in _commands(overlay, compose) if not cli_has(list(c)))
    assert not missing, f"commands the CLI does not have: {missing}"


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_parse_and_name_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    exported = series_names(exported_metrics())
    assert "stimulus_issuance_dead_letters_total" in exported
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 8
    used: set[str] = set()
    for rule in alerts:
        assert rule["alert"] and rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in {"page", "warn", "info"}
        expression = promql_parser.parse(rule["expr"])
        names: list[str] = []

        def visit(node: Any, names: list[str] = names) -> bool:
            if isinstance(node, promql_parser.VectorSelector):
                names.append(node.name or "")
            return True

        promql_parser.walk(expression, visit)
        assert names, rule["alert"]
        unknown = set(names) - exported - PROMETHEUS_OWN_SERIES
        assert not unknown, f"{rule['alert']} names metrics nothing exports: {unknown}"
        used.update(names)
    assert used & exported >= {"stimulus_http_requests_total", "stimulus_issuance_packets_total",
                               "stimulus_issuance_outbox_open"}


def test_deployment_doc_lists_every_exported_metric() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    section = doc.split("## What to monitor", 1)[1]
    listed = set(re.findall(r"^\| `(stimulus_[a-z_]+)`", section, re.M))
    assert listed == set(exported_metrics())
