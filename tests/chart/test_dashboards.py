"""Grafana dashboards: valid JSON on a datasource variable, app metrics only, shipped verbatim."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitoring.monitoringkit import (
    CLUSTER_SERIES,
    PROMETHEUS_SERIES,
    RECORDING_RULE_PREFIX,
    REDIS_ONLY_SERIES,
    SHADOW_ONLY_SERIES,
)

from app.telemetry.metrics import Metrics
from chart.chartkit import ROOT, VALUES_DEV, VALUES_PROD, Render

DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def exported_series() -> set[str]:
    """Every series name the app's metrics can expose (counters' _total, histograms' parts)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, "dashboards/ is empty"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_json_on_a_prometheus_datasource_variable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"]
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_use_only_the_apps_metric_names(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    # Besides the app's: Prometheus' `up`, cluster series (kube-state-metrics, cAdvisor), the
    # chart's recording rules and the series of a configured Redis or shadow target (registered
    # only with one); tests/monitoring/ checks those against the rules and a real Prometheus
    # (its app has a Redis and shadows to a canary).
    known = exported_series() | PROMETHEUS_SERIES | set(CLUSTER_SERIES) | REDIS_ONLY_SERIES
    known |= SHADOW_ONLY_SERIES
    used = {name for query in queries(dashboard) for name in SELECTOR.findall(query)}
    used = {name for name in used if not name.startswith(RECORDING_RULE_PREFIX)}
    assert used, "no metric selector found in the queries"
    assert sorted(used - known) == [], "metrics the app does not export"
    # Every query is scoped by the dashboard's job and namespace variables.
    for query in queries(dashboard):
        if "label_values" not in query:
            assert 'job=~"$job"' in query, query
            assert 'namespace=~"$namespace"' in query, query


def test_metric_name_check_catches_an_unknown_name() -> None:
    known = exported_series()
    assert "request_count_total" in known
    assert "request_duration_seconds_bucket" in known
    assert set(SELECTOR.findall('rate(request_count{job="x"}[5m])')) - known == {"request_count"}


@pytest.mark.parametrize(
    "values", [(), (VALUES_DEV,), (VALUES_PROD,)], ids=["defaults", "dev", "prod"]
)
def test_chart_ships_each_dashboard_verbatim_labelled_for_the_sidecar(
    render: Render, values: tuple[Path, ...]
) -> None:
    configmaps = [
        m
        for m in render(values)
        if m["kind"] == "ConfigMap"
        and m["metadata"]["name"].startswith("rel-resnet-serving-dashboard-")
    ]
    shipped = {key: text for cm in configmaps for key, text in cm["data"].items()}
    assert sorted(shipped) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert shipped[path.name] == path.read_text().rstrip("\n")
        assert json.loads(shipped[path.name]) == json.loads(path.read_text())
    for cm in configmaps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
