"""Constants, types and helpers shared by the chart tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "resnet-serving"
TOOLS = ROOT / ".tools"
SCHEMAS = TOOLS / "schemas"
VALUES_DEV = ROOT / "values-dev.yaml"
VALUES_PROD = ROOT / "values-prod.yaml"
# An overlay: always rendered on top of values-prod.yaml, as its header says.
VALUES_GPU = ROOT / "values-gpu.yaml"
VALUES_PROD_GPU = (VALUES_PROD, VALUES_GPU)
RELEASE = "rel"
# ServiceMonitor and PrometheusRule are off in the chart's defaults (they need the
# prometheus-operator CRDs); tests of those objects under the defaults turn them on.
MONITORING_ON = ("serviceMonitor.enabled=true", "prometheusRule.enabled=true")
NAMESPACE = "serving"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]
Helm = Callable[..., "subprocess.CompletedProcess[str]"]


def template_args(
    chart: Path,
    values: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[str]:
    args = ["template", release, str(chart), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for item in set_values:
        args += ["--set", item]
    return args


CACHE_COMPONENT = "cache"
# Components of the chart beside the server's (component `server`): the Redis of the cache, and
# the A/B canary and router (canary.enabled, router.enabled).
AUX_COMPONENTS = frozenset({CACHE_COMPONENT, "canary", "router"})


def only(
    manifests: Sequence[Manifest],
    kind: str,
    name: str | None = None,
    *,
    cache: bool = False,
    component: str | None = None,
) -> Manifest:
    """The one manifest of that kind (and name); fails when there are none or several. The
    chart's other components have their own Deployment, Service, ...: the Redis the chart
    deploys beside the server (cache.redis.enabled: component `cache`), the canary and the
    router (component `canary`, `router`). They are left out unless asked for by `component`
    (or `cache`), then only theirs are looked at."""
    wanted = CACHE_COMPONENT if cache else component
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and (name is None or m["metadata"]["name"] == name)
        and (_component(m) == wanted if wanted is not None else _component(m) not in AUX_COMPONENTS)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _component(manifest: Manifest) -> str | None:
    labels = manifest.get("metadata", {}).get("labels") or {}
    component: str | None = labels.get("app.kubernetes.io/component")
    return component


def server_service(manifests: Sequence[Manifest]) -> Manifest:
    """The Service in front of the server's pods: the release's Service, or, behind the A/B
    router (canary.enabled, router.enabled; the release's Service then selects the router),
    `<fullname>-stable`. The ServiceMonitor scrapes through it."""
    found = [
        m
        for m in manifests
        if m["kind"] == "Service"
        and _component(m) not in AUX_COMPONENTS
        and (m["spec"].get("selector") or {}).get("app.kubernetes.io/component") == "server"
    ]
    assert len(found) == 1, f"expected one Service of the server's pods, got {len(found)}"
    return found[0]


def release_service(manifests: Sequence[Manifest]) -> Manifest:
    """The release's Service, `<fullname>`, what clients call: in front of the server's pods,
    or of the A/B router's (canary.enabled, router.enabled)."""
    found = [
        m
        for m in manifests
        if m["kind"] == "Service" and m["metadata"]["name"] == f"{RELEASE}-resnet-serving"
    ]
    assert len(found) == 1, f"expected the Service {RELEASE}-resnet-serving, got {len(found)}"
    return found[0]
