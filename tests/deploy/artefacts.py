"""Reading the deployment artefacts the way their tools would, without the tools' runtimes.

No kubectl, kustomize or container runtime runs here, so this renders the kustomize overlay
itself (the subset the overlay uses: resources, namespace, images, labels, strategic-merge
patches keyed by kind and name) and collects what the product reads from its environment and
which commands its CLI has, for the tests to hold the artefacts against.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAY = K8S / "overlays" / "production"
PRODUCT_PACKAGES = ("kernel", "stimulus", "lottery", "wallet_adapter", "merchants")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}

Resource = dict[str, Any]


def load_documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for the shapes used here: maps merge key by key,
    lists of named maps (containers, env, ports, volumes) merge by name, other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(item, dict) and "name" in item for item in [*base, *patch])):
        by_name = {item["name"]: item for item in base}
        out = [(_merge(by_name[item["name"]], item) if item["name"] in by_name else item)
               for item in patch]
        patched = {item["name"] for item in patch}
        return [item for item in base if item["name"] not in patched] + out
    return copy.deepcopy(patch)


def render(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` would print (for the features we use)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        resources.extend(render(path) if path.is_dir() else load_documents(path))
    for patch_entry in kustomization.get("patches", []):
        for patch in load_documents(directory / patch_entry["path"]):
            matches = [i for i, r in enumerate(resources) if r["kind"] == patch["kind"]
                       and r["metadata"]["name"] == patch["metadata"]["name"]]
            assert len(matches) == 1, f"patch {patch_entry['path']} matches {len(matches)} resources"
            resources[matches[0]] = _merge(resources[matches[0]], patch)
    for group in kustomization.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(group["pairs"])
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for container in containers(resources):
            name = container["image"].split(":")[0]
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return resources


def pod_specs(resources: list[Resource]) -> Iterator[tuple[Resource, Resource]]:
    for resource in resources:
        if resource["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            yield resource, resource["spec"]["template"]["spec"]


def containers(resources: list[Resource]) -> Iterator[Resource]:
    for _, spec in pod_specs(resources):
        yield from spec["containers"]


def product_sources() -> Iterator[Path]:
    for package in PRODUCT_PACKAGES:
        yield from (ROOT / package).rglob("*.py")


def product_env_names() -> set[str]:
    """Every environment variable the product reads: the upper-case names quoted in its source,
    and NAME_FILE for each secret the settings read through the file convention."""
    names: set[str] = set()
    for path in product_sources():
        text = path.read_text()
        names.update(re.findall(r"[\"']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)[\"']", text))
        names.update(f"{name}_FILE" for name in
                     re.findall(r"read\.(?:value|keys)\(\s*\"([A-Z0-9_]+)\"", text))
    return names


def exported_metrics() -> dict[str, str]:
    """Metric name -> type for every prometheus_client metric the product declares."""
    found: dict[str, str] = {}
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-z_:][a-z0-9_:]*)\"")
    for path in product_sources():
        for kind, name in pattern.findall(path.read_text()):
            found[name] = kind
    return found


def series_names(metrics: dict[str, str]) -> set[str]:
    """The series names Prometheus scrapes for those metrics."""
    series: set[str] = set()
    for name, kind in metrics.items():
        base = name.removesuffix("_total")
        if kind == "Counter":
            series.update({f"{base}_total", f"{base}_created"})
        elif kind in {"Histogram", "Summary"}:
            series.update({name, f"{name}_count", f"{name}_sum", f"{name}_created"})
            if kind == "Histogram":
                series.add(f"{name}_bucket")
        else:
            series.add(name)
    return series


def cli_has(args: list[str]) -> bool:
    """Whether the product's CLI has the (sub)command these arguments name."""
    from stimulus.cli import main

    command: click.Command = main
    for arg in args:
        if arg.startswith("-"):
            break
        if not isinstance(command, click.Group):
            break
        ctx = click.Context(command)
        found = command.get_command(ctx, arg)
        if found is None:
            return False
        command = found
    return not isinstance(command, click.Group)
