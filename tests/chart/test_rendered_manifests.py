"""Rendered manifests: valid against Kubernetes and prometheus-operator schemas, consistent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from chart.chartkit import (
    MONITORING_ON,
    VALUES_DEV,
    VALUES_PROD,
    VALUES_PROD_GPU,
    Helm,
    Manifest,
    Render,
    only,
    template_args,
)

# The chart's kubeVersion floor and a current release (schemas laid out by scripts/install.sh).
KUBERNETES_VERSIONS = ("1.27.0", "1.34.0")
VALUE_SETS = {
    "defaults": (),
    "dev": (VALUES_DEV,),
    "prod": (VALUES_PROD,),
    "prod+gpu": VALUES_PROD_GPU,
}
# With the defaults, the monitoring objects are off: turn them on where they are checked.
EXTRA = {"defaults": MONITORING_ON, "dev": (), "prod": (), "prod+gpu": ()}
# Every optional resource on, to validate each template at least once.
ALL_ON = (
    *MONITORING_ON,
    "ingress.enabled=true",
    "networkPolicy.enabled=true",
    "networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.team=gateway",
    "networkPolicy.egress[0].ports[0].port=53",
    "networkPolicy.egress[0].ports[0].protocol=UDP",
    "autoscaling.enabled=true",
    "autoscaling.targetMemoryUtilizationPercentage=80",
    "service.type=LoadBalancer",
    "service.nodePort=30123",
)


def kubeconform(binary: Path, schemas: Path, version: str, manifest_file: Path) -> str:
    proc = subprocess.run(
        [
            str(binary),
            "-strict",
            "-summary",
            "-output",
            "text",
            "-kubernetes-version",
            version,
            "-schema-location",
            str(schemas / "kubernetes")
            + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
            + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-schema-location",
            str(schemas / "crds")
            + "/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json",
            str(manifest_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", [*VALUE_SETS, "all-on"])
def test_manifests_validate_offline(
    helm: Helm,
    offline_chart: Path,
    kubeconform_bin: Path,
    schemas_dir: Path,
    tmp_path: Path,
    name: str,
    version: str,
) -> None:
    values, extra = (VALUE_SETS[name], EXTRA[name]) if name in VALUE_SETS else ((), ALL_ON)
    out = tmp_path / f"{name}.yaml"
    rendered = helm(*template_args(offline_chart, values, extra), "--kube-version", version).stdout
    out.write_text(rendered)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    report = kubeconform(kubeconform_bin, schemas_dir, version, out)
    count = sum(1 for doc in yaml.safe_load_all(rendered) if doc)
    # Nothing skipped for want of a schema: the CRDs are validated too.
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in report, report
    assert {"ServiceMonitor", "PrometheusRule", "Deployment", "Service"} <= kinds


def test_kubeconform_catches_an_invalid_manifest(
    render: Render, kubeconform_bin: Path, schemas_dir: Path, tmp_path: Path
) -> None:
    manifests = render([VALUES_PROD])
    only(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["intervall"] = "30s"
    only(manifests, "Deployment")["spec"]["replicas"] = "three"
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump_all(manifests))
    with pytest.raises(AssertionError) as failure:
        kubeconform(kubeconform_bin, schemas_dir, "1.34.0", out)
    assert "intervall" in str(failure.value)
    assert "replicas" in str(failure.value)


# --- labels and selectors agree ----------------------------------------------------------------
def _selector(manifest: Manifest) -> dict[str, str]:
    spec = manifest["spec"]
    selector: dict[str, str] = (
        spec["selector"] if manifest["kind"] == "Service" else spec["selector"]["matchLabels"]
    )
    return selector


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_deployment_service_servicemonitor_and_pdb_select_the_same_pods(
    render: Render, name: str
) -> None:
    manifests = render(VALUE_SETS[name], [*EXTRA[name], "podDisruptionBudget.enabled=true"])
    deployment = only(manifests, "Deployment")
    service = only(manifests, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = _selector(deployment)
    assert selector.items() <= pod_labels.items()
    assert _selector(service) == selector
    assert _selector(only(manifests, "PodDisruptionBudget")) == selector
    # The ServiceMonitor selects Services: ours must carry its selector.
    monitor = only(manifests, "ServiceMonitor")
    assert _selector(monitor).items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_servicemonitor_scrapes_the_services_named_port_which_targets_the_container(
    render: Render, name: str
) -> None:
    manifests = render(VALUE_SETS[name], EXTRA[name])
    service_port = only(manifests, "Service")["spec"]["ports"][0]
    endpoint = only(manifests, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["port"] == service_port["name"] == "http"
    assert endpoint["path"] == "/metrics"
    container = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert service_port["targetPort"] in {p["name"] for p in container["ports"]}
    assert service_port["port"] == 8080


def test_defaults_install_on_a_cluster_without_prometheus_operator(render: Render) -> None:
    groups = {m["apiVersion"].split("/")[0] for m in render()}
    assert "monitoring.coreos.com" not in groups


def test_the_helm_test_pod_is_not_behind_the_service(render: Render) -> None:
    manifests = render()
    pod = only(manifests, "Pod")
    selector = _selector(only(manifests, "Service"))
    assert not selector.items() <= pod["metadata"]["labels"].items()


# --- config checksum ---------------------------------------------------------------------------
def _checksum(manifests: list[Manifest]) -> str:
    annotations = only(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations["checksum/config"]
    return value


def test_a_settings_change_rolls_the_pods_and_other_changes_do_not(render: Render) -> None:
    base = _checksum(render())
    assert _checksum(render([], ["config.SERVING_TOP_K=3"])) != base
    assert _checksum(render([], ["config.SERVING_LOG_LEVEL=debug"])) != base
    assert _checksum(render([], ["replicaCount=5"])) == base
    assert _checksum(render([], ["resources.limits.cpu=3"])) == base


def test_dev_and_prod_render_the_same_kinds_of_our_own_resources(render: Render) -> None:
    dev = {m["kind"] for m in render([VALUES_DEV])}
    prod = {m["kind"] for m in render([VALUES_PROD])}
    assert prod - dev == {"HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert dev <= prod
