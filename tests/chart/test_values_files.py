"""values-dev.yaml, values-prod.yaml and values-gpu.yaml (an overlay on values-prod.yaml): what
each promises, and the subchart keys dev relies on.

The kube-prometheus-stack chart cannot be downloaded here, so its values.yaml for the pinned
version was read once and the keys that values-dev.yaml relies on were recorded in
fixtures/kube-prometheus-stack-values-keys.yaml (with where they came from and the file's
sha256). The tests check that every kube-prometheus-stack key of values-dev.yaml is one of
them (a typo or a key of another chart version would otherwise be ignored silently: the
chart has no values schema). Where the upstream file is at hand (the workflow has it after
`helm dependency build`: charts/resnet-serving/charts/kube-prometheus-stack-*.tgz), point
KPS_VALUES_YAML at it and the fixture itself is checked against it:

    KPS_VALUES_YAML=/path/to/values.yaml pytest tests/chart/test_values_files.py

`python tests/chart/test_values_files.py /path/to/values.yaml` regenerates the fixture's keys.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.chartkit import (
    CHART,
    VALUES_DEV,
    VALUES_GPU,
    VALUES_PROD,
    VALUES_PROD_GPU,
    Render,
    only,
)

FIXTURE = Path(__file__).parent / "fixtures" / "kube-prometheus-stack-values-keys.yaml"
SUBCHART = "kube-prometheus-stack"
FREE = "free-map"  # an upstream key whose default is {} or null: any keys may go below it


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def leaves(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, (*prefix, str(key)))
    else:
        yield prefix, node


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "map"


def record_keys(upstream: dict[str, Any], dev_subchart: dict[str, Any]) -> dict[str, str]:
    """{dotted key: kind} of the upstream keys that dev_subchart's leaves rely on."""
    keys: dict[str, str] = {}
    for path, _ in leaves({k: v for k, v in dev_subchart.items() if k != "enabled"}):
        node: Any = upstream
        for depth, part in enumerate(path):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"{'.'.join(path)}: {part!r} is not a key upstream")
            node = node[part]
            here = ".".join(path[: depth + 1])
            if node is None or node == {}:
                keys[here] = FREE
                break
            if depth == len(path) - 1:
                keys[here] = kind_of(node)
    return dict(sorted(keys.items()))


def check_keys(dev_subchart: dict[str, Any], keys: dict[str, str]) -> list[str]:
    problems = []
    for path, value in leaves({k: v for k, v in dev_subchart.items() if k != "enabled"}):
        dotted = ".".join(path)
        prefixes = [".".join(path[:i]) for i in range(1, len(path))]
        if dotted in keys:
            if keys[dotted] not in (FREE, kind_of(value)):
                problems.append(f"{dotted}: a {kind_of(value)} where upstream has a {keys[dotted]}")
        elif not any(keys.get(p) == FREE for p in prefixes):
            problems.append(f"{dotted}: not a key of {SUBCHART} (fixture)")
    return problems


# --- values-dev.yaml ---------------------------------------------------------------------------
def test_dev_uses_only_keys_of_the_pinned_kube_prometheus_stack() -> None:
    fixture = load(FIXTURE)
    problems = check_keys(load(VALUES_DEV)[SUBCHART], fixture["keys"])
    assert problems == [], f"values-dev.yaml vs {SUBCHART} {fixture['version']}"


def test_the_key_check_catches_a_misspelt_or_mistyped_key() -> None:
    keys = load(FIXTURE)["keys"]
    dev = load(VALUES_DEV)[SUBCHART]
    dev["grafana"]["sidecar"]["dashboards"]["labelvalue"] = "1"  # case typo
    dev["prometheus"]["prometheusSpec"]["retention"] = 7  # number where upstream has a string
    problems = check_keys(dev, keys)
    assert any("labelvalue" in p for p in problems)
    assert any("retention" in p and "number" in p for p in problems)


def test_fixture_matches_the_upstream_values_yaml() -> None:
    upstream_path = os.environ.get("KPS_VALUES_YAML")
    if not upstream_path:
        pytest.skip("KPS_VALUES_YAML not set: the upstream values.yaml is not at hand here")
    text = Path(upstream_path).read_bytes()
    fixture = load(FIXTURE)
    assert hashlib.sha256(text).hexdigest() == fixture["sha256"], "another version's values.yaml"
    assert record_keys(yaml.safe_load(text), load(VALUES_DEV)[SUBCHART]) == fixture["keys"]


def test_dev_runs_one_replica_on_a_node_port_with_small_resources(render: Render) -> None:
    manifests = render([VALUES_DEV])
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    service = only(manifests, "Service")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == 30080
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] in ("250m", "500m")
    assert not [m for m in manifests if m["kind"] in ("HorizontalPodAutoscaler",)]


def test_dev_turns_on_the_stack_with_the_sidecar_loading_our_dashboards() -> None:
    dev = load(VALUES_DEV)
    stack = dev[SUBCHART]
    assert stack["enabled"] is True
    sidecar = stack["grafana"]["sidecar"]["dashboards"]
    assert stack["grafana"]["enabled"] is True
    assert sidecar["enabled"] is True
    assert sidecar["label"] == dev["dashboards"]["label"]
    assert sidecar["labelValue"] == dev["dashboards"]["labelValue"]
    assert sidecar["searchNamespace"] == "ALL"


def _days(duration: str) -> float:
    units = {"y": 365.0, "w": 7.0, "d": 1.0, "h": 1 / 24, "m": 1 / 1440, "s": 1 / 86400}
    parts = re.findall(r"(\d+)([ywdhms])", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def test_dev_keeps_metrics_at_least_seven_days_on_a_volume() -> None:
    spec = load(VALUES_DEV)[SUBCHART]["prometheus"]["prometheusSpec"]
    assert _days(spec["retention"]) >= 7
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"]


def test_dev_monitoring_objects_carry_the_release_label_the_subchart_selects(
    render: Render,
) -> None:
    # kube-prometheus-stack's Prometheus selects release=<its release>: ours, as a subchart.
    manifests = render([VALUES_DEV], release="resnet")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert only(manifests, kind)["metadata"]["labels"]["release"] == "resnet"


# --- values-prod.yaml --------------------------------------------------------------------------
def test_prod_leaves_the_stack_out_and_labels_for_the_existing_one(render: Render) -> None:
    prod = load(VALUES_PROD)
    assert prod[SUBCHART]["enabled"] is False
    manifests = render([VALUES_PROD])
    release = prod["monitoring"]["release"]
    assert release
    assert release != "rel"
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert only(manifests, kind)["metadata"]["labels"]["release"] == release
    dashboards = [
        m for m in manifests if m["kind"] == "ConfigMap" and "dashboard" in m["metadata"]["name"]
    ]
    assert dashboards
    for cm in dashboards:
        assert (
            cm["metadata"]["labels"][prod["dashboards"]["label"]]
            == prod["dashboards"]["labelValue"]
        )


def test_prod_runs_at_least_three_replicas_with_hpa_and_pdb(render: Render) -> None:
    manifests = render([VALUES_PROD])
    hpa = only(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert "replicas" not in only(manifests, "Deployment")["spec"]
    pdb = only(manifests, "PodDisruptionBudget")
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable")


def test_prod_sizes_resources_for_resnet50_on_cpu_and_spreads_over_nodes(render: Render) -> None:
    pod = only(render([VALUES_PROD]), "Deployment")["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS
    assert resources["requests"]["cpu"] == "2"
    assert resources["requests"]["memory"] == "2560Mi"  # docs/DEPLOYMENT.md, "Memory limits"
    keys = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert keys["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert "topology.kubernetes.io/zone" in keys
    for constraint in keys.values():
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rel"


# --- values-gpu.yaml (on top of values-prod.yaml) ----------------------------------------------
def _app_version() -> str:
    version: str = load(CHART / "Chart.yaml")["appVersion"]
    return version


def test_gpu_says_it_goes_on_top_of_prod_and_overrides_only_the_gpu_part() -> None:
    text = VALUES_GPU.read_text()
    header = text.split("\n\n", 1)[0]
    assert "-f values-prod.yaml -f values-gpu.yaml" in header.replace("\\\n#", "")
    assert "nvidia.com/gpu" in header
    # An overlay: replicas, HPA, PDB, spread and monitoring stay values-prod.yaml's.
    assert set(load(VALUES_GPU)) == {"image", "config", "resources", "nodeSelector", "tolerations"}
    # Its CPU and memory figures are estimates, and say so.
    assert "not measured" in text.lower()


def test_gpu_on_prod_runs_the_gpu_image_on_gpu_nodes_with_one_gpu(render: Render) -> None:
    manifests = render(VALUES_PROD_GPU)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"ghcr.io/resnet-serving/resnet-serving:{_app_version()}-gpu"
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    # Kubernetes takes an extended resource's request from its limit; a different one is refused.
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    for name in ("cpu", "memory"):
        assert resources["requests"][name] == resources["limits"][name]  # Guaranteed QoS
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    data = only(manifests, "ConfigMap", "rel-resnet-serving")["data"]
    assert data["SERVING_MODEL_DIR"] == ""  # no IR in the GPU image
    assert data["SERVING_DEVICE"] == "cuda"
    assert data["SERVING_LOG_FORMAT"] == "json"  # values-prod.yaml's settings stay


def test_gpu_on_prod_keeps_prods_scaling_spread_and_monitoring(render: Render) -> None:
    prod = render([VALUES_PROD])
    gpu = render(VALUES_PROD_GPU)
    assert {m["kind"] for m in gpu} == {m["kind"] for m in prod}
    assert (
        only(gpu, "HorizontalPodAutoscaler")["spec"]
        == only(prod, "HorizontalPodAutoscaler")["spec"]
    )
    spread = only(gpu, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (
        spread == only(prod, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    )
    assert only(gpu, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize(
    "values", [(), (VALUES_DEV,), (VALUES_PROD,)], ids=["defaults", "dev", "prod"]
)
def test_the_other_files_run_the_cpu_image_with_its_baked_ir(
    render: Render, values: tuple[Path, ...]
) -> None:
    manifests = render(values)
    image = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert not image.endswith("-gpu")
    assert only(manifests, "ConfigMap", "rel-resnet-serving")["data"]["SERVING_MODEL_DIR"] == (
        "/opt/model"
    )


def test_values_files_only_set_keys_the_chart_knows() -> None:
    # values.schema.json refuses unknown top-level keys; this says which file has one.
    known = set(load(CHART / "values.yaml"))
    for path in (VALUES_DEV, VALUES_PROD, VALUES_GPU):
        assert set(load(path)) - known == set(), path.name


def main(argv: list[str]) -> int:
    """Print the fixture's keys for an upstream values.yaml (to paste into the fixture)."""
    upstream = Path(argv[1])
    text = upstream.read_bytes()
    print(f"sha256: {hashlib.sha256(text).hexdigest()}")
    keys = record_keys(yaml.safe_load(text), load(VALUES_DEV)[SUBCHART])
    print(yaml.safe_dump({"keys": keys}, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
