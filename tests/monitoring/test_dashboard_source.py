"""dashboards/*.json is what scripts/dashboards.py (Grafana Foundation SDK) generates, and the
overview and A/B dashboards have the panels and variables the product promises. tests/chart/
checks that the chart ships the files verbatim; test_prometheus_integration.py runs every query
(the A/B dashboard's against two app versions)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart.chartkit import CHART, ROOT

from monitoring.monitoringkit import (
    DASHBOARDS_DIR,
    SHADOW_ONLY_SERIES,
    metric_names,
    panel_queries,
    panels,
)
from scripts import dashboards as generator

OVERVIEW = DASHBOARDS_DIR / "resnet-serving-overview.json"
AB = DASHBOARDS_DIR / "resnet-serving-ab.json"
BOTH = pytest.mark.parametrize("path", [OVERVIEW, AB], ids=["overview", "ab"])
# What the A/B dashboard must show, by panel title, and a series each panel must read.
REQUIRED_AB_PANELS = {
    "API requests / s by version": "request_count_total",
    "5xx ratio (API) by version": "request_count_total",
    "Latency /predict by version (p50, p95)": "request_duration_seconds_bucket",
    "Top-1 score by version (p10, p50, p90)": "prediction_top1_score_bucket",
    "Top-1 score distribution by version (dashboard range)": "prediction_top1_score_bucket",
    "Shadow disagreement ratio (top-1 class)": "shadow_comparisons_total",
    "Shadow comparisons / s by result": "shadow_comparisons_total",
}
# What the overview must show, by panel title, and a series each panel must read.
REQUIRED_PANELS = {
    "Requests / s by route and status": "request_count_total",
    "Error ratio (5xx) by route": "request_count_total",
    "5xx ratio (API)": "request_count_total",
    "Latency by route (p50, p95, p99)": "request_duration_seconds_bucket",
    "Requests in flight": "requests_in_flight",
    "Inference time per batch (p50, p95, p99)": "inference_duration_seconds_bucket",
    "Predictions / s by model": "prediction_count_total",
    "Top predicted classes (dashboard range)": "predicted_class_total",
    "Replicas up": "up",
    "Replicas (HPA current, desired, max)": "kube_horizontalpodautoscaler_status_current_replicas",
    "CPU per pod (container, cAdvisor)": "container_cpu_usage_seconds_total",
    "Memory per pod (container working set, cAdvisor)": "container_memory_working_set_bytes",
    "CPU per pod (process)": "process_cpu_seconds_total",
    "Memory per pod (process resident)": "process_resident_memory_bytes",
    "Loaded model per pod": "model_info",
    "Decode memory in flight and budget": "decode_memory_in_flight_bytes",
    "Body memory in flight and budget": "body_memory_in_flight_bytes",
    "Cache hit ratio (overall and per tier)": "prediction_cache_requests_total",
    "Cache lookups / s by tier and result": "prediction_cache_requests_total",
    "Cache memory held in process": "prediction_cache_bytes",
    "Redis errors / s by pod": "prediction_cache_requests_total",
    "Redis up per pod": "prediction_cache_redis_up",
    "Redis latency by op (p50, p95)": "prediction_cache_redis_duration_seconds_bucket",
}


def test_committed_dashboards_are_the_generated_ones() -> None:
    committed = sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
    assert committed == sorted(generator.DASHBOARDS), "a JSON file without a generator"
    for name in generator.DASHBOARDS:
        assert (DASHBOARDS_DIR / name).read_text() == generator.render(name), (
            f"dashboards/{name} is stale: run `python scripts/dashboards.py`"
        )


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/dashboards.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    stale = tmp_path / "resnet-serving-overview.json"
    stale.write_text(OVERVIEW.read_text().replace("p95 latency /predict", "p95 latency"))
    monkeypatch.setattr(generator, "OUT_DIR", tmp_path)
    assert generator.main(["--check"]) == 1


def test_overview_has_the_promised_panels_on_the_right_series() -> None:
    dashboard = json.loads(OVERVIEW.read_text())
    reads: dict[str, set[str]] = {}
    for title, _, expr in panel_queries(dashboard):
        reads.setdefault(title, set()).update(metric_names(expr))
    for title, series in REQUIRED_PANELS.items():
        assert title in reads, f"no panel {title!r}"
        assert series in reads[title], f"{title!r} does not read {series}"
    latency = [e for t, _, e in panel_queries(dashboard) if t.startswith("Latency by route")]
    assert [e.split(",")[0] for e in latency] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    ]


def test_overview_variables_are_datasource_namespace_job_and_pod() -> None:
    dashboard = json.loads(OVERVIEW.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job", "pod"]
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "pod"):
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["definition"] == variables[name]["query"]


def test_every_query_is_scoped_to_the_selected_pods() -> None:
    """App series by job, namespace and pod; cluster series joined with this job's targets;
    the recording rules' series (no pod label) by job and namespace."""
    dashboard = json.loads(OVERVIEW.read_text())
    for title, ref, expr in panel_queries(dashboard):
        assert 'namespace=~"$namespace"' in expr, (title, ref)
        assert 'job=~"$job"' in expr, (title, ref)
        if "resnet_serving:" not in expr:
            assert 'pod=~"$pod"' in expr, (title, ref)


@BOTH
def test_panel_ids_are_unique_and_panels_do_not_overlap(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    cells: set[tuple[int, int]] = set()
    ids = []
    for panel in panels(dashboard):
        ids.append(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        columns = range(pos["x"], pos["x"] + pos["w"])
        mine = {(x, y) for x in columns for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    assert len(ids) == len(set(ids))


def test_cache_row_reads_hit_ratios_and_redis_latency_as_the_metrics_define_them() -> None:
    """Every image asks the local tier first, so the overall hit ratio is the hits of both tiers
    over the local tier's lookups; Redis latency is p50 and p95 by op."""
    dashboard = json.loads(OVERVIEW.read_text())
    by_title: dict[str, list[str]] = {}
    for title, _, expr in panel_queries(dashboard):
        by_title.setdefault(title, []).append(expr)
    overall, per_tier = by_title["Cache hit ratio (overall and per tier)"]
    hits, lookups = overall.split(" / ")
    assert 'result="hit"' in hits
    assert "tier=" not in hits
    assert 'tier="local"' in lookups
    assert "result=" not in lookups
    assert per_tier.count("sum by (tier)") == 3
    latency = by_title["Redis latency by op (p50, p95)"]
    assert [e.split(",")[0] for e in latency] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
    ]
    assert all("sum by (le, op)" in e for e in latency)
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-1] == "Prediction cache"


@BOTH
def test_latency_panels_show_exemplars_once_and_other_panels_none(path: Path) -> None:
    """Every time series panel of a latency histogram (`*_seconds` buckets) asks for exemplars
    (the trace IDs of traced requests) on exactly one target: every quantile selects the same
    buckets, so one query returns them all. No other target asks (a stat panel cannot draw
    them; the image-size histogram and the top-1 score are not latencies)."""
    dashboard = json.loads(path.read_text())
    latency_panels = []
    for panel in panels(dashboard):
        targets = panel.get("targets", [])
        asking = [t["refId"] for t in targets if t.get("exemplar")]
        latency = panel["type"] == "timeseries" and any(
            "histogram_quantile(" in t["expr"] and "_seconds_bucket{" in t["expr"] for t in targets
        )
        if latency:
            latency_panels.append(panel["title"])
            assert asking == ["A"], panel["title"]
        else:
            assert asking == [], panel["title"]
    if path == OVERVIEW:
        assert "Latency by route (p50, p95, p99)" in latency_panels
        assert "Inference time per batch (p50, p95, p99)" in latency_panels
    else:
        assert "Latency /predict by version (p50, p95)" in latency_panels
        assert "Shadow call latency (p50, p95)" in latency_panels


def test_ab_has_the_promised_panels_on_the_right_series() -> None:
    dashboard = json.loads(AB.read_text())
    reads: dict[str, set[str]] = {}
    for title, _, expr in panel_queries(dashboard):
        reads.setdefault(title, set()).update(metric_names(expr))
    for title, series in REQUIRED_AB_PANELS.items():
        assert title in reads, f"no panel {title!r}"
        assert series in reads[title], f"{title!r} does not read {series}"
    latency = [e for t, _, e in panel_queries(dashboard) if t.startswith("Latency /predict")]
    assert [e.split(",")[0] for e in latency] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
    ]


def test_ab_variables_are_datasource_namespace_and_job() -> None:
    """A version is all its pods: no pod variable."""
    dashboard = json.loads(AB.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job"]
    overview = {v["name"]: v for v in json.loads(OVERVIEW.read_text())["templating"]["list"]}
    for name in ("namespace", "job"):
        assert variables[name] == overview[name]


def test_every_ab_query_splits_by_model_version_within_the_selected_jobs() -> None:
    """Every expression is scoped by job and namespace (not pod) and keeps model_version in
    every aggregation, so each version is its own series; the legend names the version."""
    dashboard = json.loads(AB.read_text())
    checked = 0
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert 'namespace=~"$namespace"' in expr, panel["title"]
            assert 'job=~"$job"' in expr, panel["title"]
            assert "pod" not in expr, panel["title"]
            groupings = re.findall(r"\b(?:by|on) \(([^)]*)\)", expr)
            assert groupings, panel["title"]
            for grouping in groupings:
                assert "model_version" in grouping.split(", "), (panel["title"], grouping)
            if panel["type"] != "table":
                assert "{{model_version}}" in target["legendFormat"], panel["title"]
            checked += 1
    assert checked >= 15


def test_ab_shadow_panels_are_exactly_those_on_the_shadow_series() -> None:
    """SHADOW_PANELS (one series per shadowing version, the stable's) are the panels on the
    shadow comparison's series, and they sit in the dashboard's last row."""
    dashboard = json.loads(AB.read_text())
    by_title: dict[str, set[str]] = {}
    for title, _, expr in panel_queries(dashboard):
        by_title.setdefault(title, set()).update(metric_names(expr))
    on_shadow = {title for title, names in by_title.items() if names & SHADOW_ONLY_SERIES}
    assert on_shadow == set(generator.SHADOW_PANELS)
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-1] == "Shadow comparison"


def test_ab_latency_is_on_the_routes_of_the_chart_alert() -> None:
    """The latency panel shows the routes that ResNetServingCanaryWorse compares (the chart's
    default prometheusRule.alerts.latency.routes)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    routes = values["prometheusRule"]["alerts"]["latency"]["routes"]
    assert f'route="{routes}"' in generator.AB_LATENCY


def test_the_dashboards_link_each_other() -> None:
    """Each dashboard lists the others by their common tag, keeping time range and variables."""
    for path in (OVERVIEW, AB):
        dashboard = json.loads(path.read_text())
        assert generator.TAG in dashboard["tags"]
        (link,) = dashboard["links"]
        assert link["type"] == "dashboards"
        assert link["tags"] == [generator.TAG]
        assert link["includeVars"] is True
        assert link["keepTime"] is True
    assert json.loads(AB.read_text())["uid"] == "resnet-serving-ab"
