"""The local cluster's scripts and overlay, checked statically here (scripts/e2e.sh runs them
for real in .ci/run): shellcheck-clean bash, pinned versions in one place, usage errors, and
the overlay rendering with values-dev.yaml into what the cluster and the e2e suite rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.chartkit import Render, only

ROOT = Path(__file__).resolve().parents[2]
# The entry points; shellcheck -x follows them into the parts they source (scripts/cluster/).
ENTRY_POINTS = [ROOT / "scripts/cluster.sh", ROOT / "scripts/e2e.sh"]
SCRIPTS = [*ENTRY_POINTS, *sorted((ROOT / "scripts/cluster").glob("*.sh"))]
OVERLAY = ROOT / "deploy/local-cluster/values-local.yaml"
DEV = ROOT / "values-dev.yaml"
JAEGER = ROOT / "deploy/local-cluster/jaeger.yaml"


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (scripts/install.sh installs it)")
    result = subprocess.run(
        [shellcheck, "-x", *map(str, ENTRY_POINTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_every_version_is_pinned_in_versions_sh() -> None:
    versions = (ROOT / "scripts/cluster/versions.sh").read_text()
    pins = dict(re.findall(r"^([A-Z_]+_VERSION)=(\S+)$", versions, re.MULTILINE))
    for name in (
        "KUBERNETES_VERSION",
        "COREDNS_VERSION",
        "PROMETHEUS_OPERATOR_VERSION",
        "PROMETHEUS_MODULE_VERSION",
        "METRICS_SERVER_VERSION",
        "JAEGER_VERSION",
    ):
        assert re.fullmatch(r"v\d+\.\d+\.\d+", pins[name]), (name, pins.get(name))
    # No other script names a version of its own.
    for script in SCRIPTS:
        if script.name == "versions.sh":
            continue
        assert not re.search(r"@v\d+\.\d+\.\d+", script.read_text()), script


def test_the_operator_version_is_the_one_the_chart_tests_use() -> None:
    install = (ROOT / "scripts/install.sh").read_text()
    versions = (ROOT / "scripts/cluster/versions.sh").read_text()
    pin = re.compile(r"^PROMETHEUS_OPERATOR_VERSION=(\S+)$", re.MULTILINE)
    assert pin.findall(install) == pin.findall(versions)


@pytest.mark.parametrize("args", [[], ["reboot"]])
def test_cluster_sh_answers_a_wrong_command_with_usage_and_status_2(args: list[str]) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/cluster.sh"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "scripts/cluster.sh up" in result.stdout + result.stderr


def test_overlay_turns_off_the_subchart_and_serves_the_local_image(render: Render) -> None:
    overlay = yaml.safe_load(OVERLAY.read_text())
    assert overlay["kube-prometheus-stack"]["enabled"] is False
    manifests = render([DEV, OVERLAY], ["image.tag=local-0123456789ab"], release="resnet-serving")
    deployment = only(manifests, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "local/resnet-serving:local-0123456789ab"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert deployment["spec"]["replicas"] == 2
    # Two replicas and the surge pod of a rolling update fit on 2 CPUs, and the memory limit
    # the e2e burst runs under is values-dev.yaml's own.
    assert container["resources"]["requests"]["cpu"] == "250m"
    assert "resources" not in overlay
    dev = yaml.safe_load(DEV.read_text())
    assert container["resources"]["limits"]["memory"] == dev["resources"]["limits"]["memory"]
    configmap = only(manifests, "ConfigMap", deployment["metadata"]["name"])
    assert configmap["data"]["SERVING_MODEL_WEIGHTS"] == "random"
    # The ServiceMonitor and PrometheusRule carry the label the stand-in Prometheus selects.
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert only(manifests, kind)["metadata"]["labels"]["release"] == "resnet-serving"


def test_overlay_hpa_scales_in_quickly_within_bounds(render: Render) -> None:
    manifests = render([DEV, OVERLAY], ["autoscaling.enabled=true"])
    hpa = only(manifests, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30


# --- Jaeger (scripts/cluster/tracing.sh, deploy/local-cluster/jaeger.yaml) ----------------------
def _jaeger_docs() -> dict[str, Any]:
    """The manifest's objects by kind/name, with the placeholders tracing.sh fills in."""
    text = JAEGER.read_text()
    text = text.replace("@JAEGER_IMAGE@", "local/jaeger:v1.75.0").replace("@CONFIG_DIGEST@", "0")
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(text) if d}


def test_jaeger_manifest_validates_against_the_kubernetes_schemas(
    kubeconform_bin: Path, schemas_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "jaeger.yaml"
    out.write_text(yaml.safe_dump_all(list(_jaeger_docs().values())))
    proc = subprocess.run(
        [
            str(kubeconform_bin),
            "-strict",
            "-summary",
            "-kubernetes-version",
            "1.34.0",
            "-schema-location",
            str(schemas_dir / "kubernetes")
            + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
            + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid: 5, Invalid: 0, Errors: 0, Skipped: 0" in proc.stdout, proc.stdout


def test_jaeger_runs_under_the_restricted_pod_security_standard() -> None:
    docs = _jaeger_docs()
    namespace = docs["Namespace/observability"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = docs["Deployment/jaeger"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["imagePullPolicy"] == "Never"  # loaded into containerd, never pulled
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/status", "port": "health"}, probe
    assert ports["health"] == 13133


def _jaeger_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        _jaeger_docs()["ConfigMap/jaeger-config"]["data"]["config.yaml"]
    )
    return config


def test_jaeger_config_receives_otlp_on_every_interface_into_memory() -> None:
    config = _jaeger_config()
    otlp = config["receivers"]["otlp"]["protocols"]
    assert otlp["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert otlp["http"]["endpoint"] == "0.0.0.0:4318"
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["exporters"] == ["jaeger_storage_exporter"]
    store = config["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert "memory" in config["extensions"]["jaeger_storage"]["backends"][store]
    query = config["extensions"]["jaeger_query"]
    assert query["storage"]["traces"] == store
    assert query["http"]["endpoint"] == "0.0.0.0:16686"
    assert config["extensions"]["healthcheckv2"]["http"]["endpoint"] == "0.0.0.0:13133"
    assert set(config["service"]["extensions"]) >= {
        "jaeger_storage",
        "jaeger_query",
        "healthcheckv2",
    }


def _service_port(service: dict[str, Any], number: int) -> dict[str, Any]:
    ports: list[dict[str, Any]] = [p for p in service["spec"]["ports"] if p["port"] == number]
    assert len(ports) == 1, (service["metadata"]["name"], number)
    return ports[0]


def test_jaeger_services_reach_the_ports_the_config_opens() -> None:
    docs = _jaeger_docs()
    container = docs["Deployment/jaeger"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    labels = docs["Deployment/jaeger"]["spec"]["template"]["metadata"]["labels"]
    for name, numbers in (("jaeger-collector", (4317, 4318)), ("jaeger-query", (16686,))):
        service = docs[f"Service/{name}"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        for number in numbers:
            assert ports[_service_port(service, number)["targetPort"]] == number, (name, number)


def test_dev_sends_traces_to_the_local_jaeger_and_grafana_reads_them() -> None:
    docs = _jaeger_docs()
    dev = yaml.safe_load(DEV.read_text())
    tracing = dev["tracing"]
    assert tracing["enabled"] is True
    assert tracing["protocol"] == "http/protobuf"
    collector = docs["Service/jaeger-collector"]
    host = f"{collector['metadata']['name']}.{collector['metadata']['namespace']}"
    assert tracing["endpoint"] == f"http://{host}:4318"
    assert _service_port(collector, 4318)["name"] == "otlp-http"
    # Every trace on a dev cluster.
    assert tracing["sampler"] in ("parentbased_always_on", "always_on") or (
        float(tracing["samplerRatio"]) == 1.0
    )
    grafana = dev["kube-prometheus-stack"]["grafana"]
    (jaeger,) = [d for d in grafana["additionalDataSources"] if d["type"] == "jaeger"]
    query = docs["Service/jaeger-query"]
    assert jaeger["url"] == (
        f"http://{query['metadata']['name']}.{query['metadata']['namespace']}:16686"
    )
    exemplars = grafana["sidecar"]["datasources"]["exemplarTraceIdDestinations"]
    assert exemplars["datasourceUid"] == jaeger["uid"]


def test_cluster_sh_builds_loads_deploys_and_reports_jaeger() -> None:
    script = (ROOT / "scripts/cluster.sh").read_text()
    assert "source scripts/cluster/tracing.sh" in script
    up = script[script.index("cmd_up() {") : script.index("cmd_image() {")]
    order = ["monitoring_build", "tracing_build", "monitoring_images", "tracing_images",
             "monitoring_deploy", "tracing_deploy", "install_release"]  # fmt: skip
    assert [up.index(step) for step in order] == sorted(up.index(step) for step in order)
    status = script[script.index("cmd_status() {") : script.index("cmd_down() {")]
    assert "tracing_status" in status
