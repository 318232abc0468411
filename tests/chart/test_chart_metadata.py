"""Chart.yaml facts: versions, the kube-prometheus-stack dependency, the dashboards link."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

import app
from chart.chartkit import CHART, ROOT


def chart_yaml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return data


def test_app_version_is_the_apps_version() -> None:
    assert chart_yaml()["appVersion"] == app.__version__


def test_chart_is_v2_at_version_0_1_0() -> None:
    chart = chart_yaml()
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "resnet-serving"
    assert chart["version"] == "0.1.0"


def test_kube_prometheus_stack_is_a_conditional_dependency_with_a_pinned_range() -> None:
    (dep,) = [d for d in chart_yaml()["dependencies"] if d["name"] == "kube-prometheus-stack"]
    assert dep["repository"] == "https://prometheus-community.github.io/helm-charts"
    assert dep["condition"] == "kube-prometheus-stack.enabled"
    # A patch-level range of one minor release: `~88.5.3` means >=88.5.3 <88.6.0.
    assert re.fullmatch(r"~\d+\.\d+\.\d+", dep["version"]), dep["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["kube-prometheus-stack"]["enabled"] is False


def test_the_pinned_version_is_the_one_the_values_keys_were_checked_against() -> None:
    (dep,) = [d for d in chart_yaml()["dependencies"] if d["name"] == "kube-prometheus-stack"]
    fixture = yaml.safe_load(
        (Path(__file__).parent / "fixtures" / "kube-prometheus-stack-values-keys.yaml").read_text()
    )
    assert dep["version"].lstrip("~") == fixture["version"]


def test_chart_dashboards_folder_is_a_symlink_to_the_top_level_one() -> None:
    link = CHART / "dashboards"
    assert link.is_symlink()
    assert os.readlink(link) == "../../dashboards"
    assert link.resolve() == (ROOT / "dashboards").resolve()
    assert sorted(p.name for p in link.glob("*.json"))
