"""docker-compose.yml and its config files, checked here without a Docker engine: the services
and their wiring, every mounted file exists, images pinned, the app hardened like in the
cluster, Prometheus's config valid (`promtool check config`) with the chart's alert rules,
Grafana provisioned with our data source and dashboards/ (the single source of truth)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from app.settings.config import Settings
from container.dockerkit import ROOT, Dockerfile
from helpers.tools import tool

COMPOSE = ROOT / "docker-compose.yml"
DASHBOARDS = ROOT / "dashboards"
PROMETHEUS_YML = ROOT / "deploy" / "compose" / "prometheus" / "prometheus.yml"
PINNED_IMAGE = re.compile(r"^[a-z0-9./-]+:v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$")


def load_compose_rules() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "compose_rules", ROOT / "scripts" / "compose_rules.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compose_rules"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    data = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert isinstance(data, dict)
    return data


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source (relative to the repository) of the service's bind mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_the_stack_is_app_prometheus_grafana(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"app", "prometheus", "grafana"}
    assert set(compose["volumes"]) == {"prometheus-data", "grafana-data"}
    assert compose["services"]["prometheus"]["depends_on"] == ["app"]
    assert compose["services"]["grafana"]["depends_on"] == ["prometheus"]


def test_app_is_built_here_and_hardened_like_in_the_cluster(
    compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    app = compose["services"]["app"]
    assert app["build"]["context"] == "."
    assert (ROOT / app["build"]["context"] / "Dockerfile").is_file()
    # No target: the Dockerfile's default, the cpu image; its build args are ones it declares.
    assert "target" not in app["build"]
    target = dockerfile.default_target
    assert target.name == "cpu"
    for arg in app["build"].get("args", {}):
        assert arg in target.args(), f"build arg {arg} is not the cpu target's"
        assert arg in dockerfile.stage("convert").args(), f"build arg {arg} misses the converter"
    # The image's own user; read-only root with /tmp as tmpfs, no capabilities.
    assert app["user"] == dockerfile.all(target.name, "USER")[-1].args
    assert app["read_only"] is True
    assert any(str(t).split(":")[0] == "/tmp" for t in app["tmpfs"])
    assert app["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in app["security_opt"]
    port = Settings.model_fields["port"].default
    assert app["ports"] == [f"${{APP_PORT:-{port}}}:{port}"]
    # Configuration only through SERVING_* variables.
    assert all(name.startswith("SERVING_") for name in app.get("environment", {}))
    assert "command" not in app
    assert "entrypoint" not in app


def test_images_are_pinned_versions(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        image = compose["services"][name]["image"]
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not a pinned version"


def test_every_mounted_file_exists_in_the_repository(compose: dict[str, Any]) -> None:
    mounts = 0
    for name, service in compose["services"].items():
        for target, source in bind_mounts(service).items():
            assert (ROOT / source).exists(), f"{name}: {source} -> {target} does not exist"
            mounts += 1
    assert mounts >= 4


def test_prometheus_scrapes_the_app_with_the_labels_the_rules_expect(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    rules = load_compose_rules()
    mounts = bind_mounts(compose["services"]["prometheus"])
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/compose/prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./deploy/compose/prometheus/rules"
    assert prometheus_config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    app_job = jobs[rules.RELEASE]
    port = Settings.model_fields["port"].default
    [static] = app_job["static_configs"]
    assert static["targets"] == [f"app:{port}"]
    assert static["labels"]["namespace"] == rules.NAMESPACE
    assert app_job.get("metrics_path", "/metrics") == "/metrics"


def test_compose_alert_rules_are_the_charts_rendered(tmp_path: Path) -> None:
    """One source of truth: the committed rule file is exactly what the chart renders."""
    rules = load_compose_rules()
    fresh = rules.render_file(str(tool("helm")))
    committed = rules.OUTPUT.read_text()
    assert fresh == committed, "stale: run `python scripts/compose_rules.py`"
    groups = yaml.safe_load(committed)["groups"]
    assert groups, "the chart renders no alert rules"
    for group in groups:
        for rule in group["rules"]:
            # The job and namespace labels were filled in for the compose stack.
            assert "{{ $job" not in rule["expr"]
    # Prove the comparison can fail: a changed chart rule gives a different file.
    assert fresh.replace("for: ", "for:  ") != committed


def test_promtool_accepts_the_config_and_the_rules(
    tmp_path: Path, prometheus_config: dict[str, Any]
) -> None:
    promtool = tool("promtool")
    rules_dir = ROOT / "deploy" / "compose" / "prometheus" / "rules"
    # The config as the container sees it, with the rule files at their repository path.
    config = dict(prometheus_config, rule_files=[str(rules_dir / "*.yaml")])
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout + result.stderr)

    broken = dict(prometheus_config, scrape_configs=[{"job_name": "x", "scrape_interval": "1y1"}])
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def test_grafana_provisions_our_datasource_and_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/compose/grafana/provisioning"
    provisioning = ROOT / "deploy" / "compose" / "grafana" / "provisioning"

    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]

    providers = yaml.safe_load((provisioning / "dashboards" / "resnet-serving.yaml").read_text())
    [provider] = providers["providers"]
    dashboards_target = provider["options"]["path"]
    # The provider reads the repository's dashboards/ folder itself: no copy to drift.
    assert mounts[dashboards_target] == "./dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_target + "/")
    assert (DASHBOARDS / home.removeprefix(dashboards_target + "/")).is_file()


def test_dashboards_use_a_prometheus_datasource_the_stack_provides() -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "dashboards/ is empty"
    for path in files:
        text = path.read_text()
        json.loads(text)
        # Every panel's data source is a Prometheus one (by variable or by type).
        for match in re.finditer(r'"datasource":\s*\{[^}]*\}', text):
            assert '"type": "prometheus"' in match.group(0), f"{path.name}: {match.group(0)}"
