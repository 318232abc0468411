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


def only(
    manifests: Sequence[Manifest], kind: str, name: str | None = None, *, cache: bool = False
) -> Manifest:
    """The one manifest of that kind (and name); fails when there are none or several. The
    Redis the chart deploys beside the server (cache.redis.enabled: component `cache`) has its
    own Deployment, Service, ...: left out unless `cache`, then only its are looked at."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and (name is None or m["metadata"]["name"] == name)
        and (_component(m) == CACHE_COMPONENT) == cache
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _component(manifest: Manifest) -> str | None:
    labels = manifest.get("metadata", {}).get("labels") or {}
    component: str | None = labels.get("app.kubernetes.io/component")
    return component
