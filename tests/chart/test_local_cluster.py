"""The local cluster's scripts and overlay, checked statically here (scripts/e2e.sh runs them
for real in .ci/run): shellcheck-clean bash, pinned versions in one place, usage errors, and
the overlay rendering with values-dev.yaml into what the cluster and the e2e suite rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chart.chartkit import Render, only

ROOT = Path(__file__).resolve().parents[2]
# The entry points; shellcheck -x follows them into the parts they source (scripts/cluster/).
ENTRY_POINTS = [ROOT / "scripts/cluster.sh", ROOT / "scripts/e2e.sh"]
SCRIPTS = [*ENTRY_POINTS, *sorted((ROOT / "scripts/cluster").glob("*.sh"))]
OVERLAY = ROOT / "deploy/local-cluster/values-local.yaml"
DEV = ROOT / "values-dev.yaml"


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
