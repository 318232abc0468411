"""The alert and recording rules the chart renders into its PrometheusRule, extracted from
`helm template` (not a hand copy): `promtool check rules`, `promtool test rules` with the cases
of tests/monitoring/promtool/ (every alert fires in one and stays silent in another), metric
names the app really exports, and the conventions of every alert.

ResNetServingCanaryWorse exists only with a canary (`canary.enabled`): the checks of every alert
render the chart with one (CANARY_ON); test_canary_alert_* check it is absent without."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart.chartkit import VALUES_DEV, VALUES_PROD, Render
from prometheus_client.parser import text_string_to_metric_families

from monitoring.monitoringkit import (
    CANARY_ON,
    CANARY_VERSION,
    CLUSTER_SERIES,
    PROMETHEUS_SERIES,
    PROMTOOL_TESTS,
    RECORDING_RULE_PREFIX,
    REDIS_ONLY_SERIES,
    RULES_FILE,
    SHADOW_ONLY_SERIES,
    STABLE_VERSION,
    TROUBLESHOOTING,
    declared_series,
    github_anchor,
    markdown_headings,
    metric_names,
    rule_groups,
    rules_of,
    write_rules_file,
)

PROMTOOL_CASES = sorted(PROMTOOL_TESTS.glob("*.test.yaml"))
VALUES = {"defaults": (), "dev": (VALUES_DEV,), "prod": (VALUES_PROD,)}
ALERTS = {  # every alert the chart ships, and the severities its rules carry
    "ResNetServingTargetDown": {"warning"},
    "ResNetServingDown": {"critical"},
    "ResNetServingErrorBudgetBurn": {"critical", "warning"},
    "ResNetServingLatencyBudgetBurn": {"critical", "warning"},
    "ResNetServingHighErrorRatio": {"warning"},
    "ResNetServingHighLatency": {"warning"},
    "ResNetServingModelNotReady": {"warning"},
    "ResNetServingPredictionsStopped": {"critical"},
    "ResNetServingHPAMaxedOut": {"warning"},
    "ResNetServingPodRestarting": {"warning"},
    "ResNetServingOOMKilled": {"warning"},
    "ResNetServingCacheRedisDown": {"warning"},
    "ResNetServingCanaryWorse": {"warning"},  # only with a canary
}
CANARY_ALERT = "ResNetServingCanaryWorse"
AB_GROUP, AB_ALERTS_GROUP = "resnet-serving.ab", "resnet-serving.ab-alerts"


def promtool(promtool_bin: Path, *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [str(promtool_bin), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def staged_cases(groups: list[dict[str, Any]], workdir: Path) -> list[Path]:
    """The promtool test files next to the rendered rules, as their rule_files expect."""
    write_rules_file(groups, workdir / RULES_FILE)
    return [Path(shutil.copy(case, workdir / case.name)) for case in PROMTOOL_CASES]


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_promtool_accepts_the_rendered_rules(
    render: Render, promtool_bin: Path, tmp_path: Path, values: tuple[Path, ...]
) -> None:
    groups = rule_groups(render, values, CANARY_ON)
    path = write_rules_file(groups, tmp_path / RULES_FILE)
    output = promtool(promtool_bin, "check", "rules", str(path))
    count = sum(1 for _ in rules_of(groups))
    assert f"SUCCESS: {count} rules found" in output


def test_the_chart_ships_every_alert_with_its_severities(render: Render) -> None:
    found: dict[str, set[str]] = {}
    for rule in rules_of(rule_groups(render, set_values=CANARY_ON)):
        if "alert" in rule:
            found.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    assert found == ALERTS


def test_promtool_unit_tests_pass(render: Render, promtool_bin: Path, tmp_path: Path) -> None:
    cases = staged_cases(rule_groups(render, set_values=CANARY_ON), tmp_path)
    assert cases, f"no promtool tests in {PROMTOOL_TESTS}"
    output = promtool(promtool_bin, "test", "rules", *(c.name for c in cases), cwd=tmp_path)
    assert output.count("SUCCESS") == len(cases), output


def test_promtool_unit_tests_fail_on_a_wrong_expectation(
    render: Render, promtool_bin: Path, tmp_path: Path
) -> None:
    """The unit tests can fail: a threshold moved by values breaks the expected firing."""
    groups = rule_groups(
        render, set_values=(*CANARY_ON, "prometheusRule.alerts.errorRatio.threshold=0.5")
    )
    cases = staged_cases(groups, tmp_path)
    proc = subprocess.run(
        [str(promtool_bin), "test", "rules", *(c.name for c in cases)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "alertname: ResNetServingHighErrorRatio" in proc.stdout + proc.stderr


def expectations(case: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    data = yaml.safe_load(case.read_text())
    assert data["rule_files"] == [RULES_FILE], case.name
    return [
        (check["alertname"], check.get("exp_alerts") or [])
        for test in data["tests"]
        for check in test.get("alert_rule_test", [])
    ]


def test_every_alert_has_a_firing_and_a_silent_promtool_case() -> None:
    """For each alert and severity, a series that fires it; for each alert, one that keeps it
    silent. A new alert without its unit tests fails here."""
    fired: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for case in PROMTOOL_CASES:
        for alert, expected in expectations(case):
            if not expected:
                silent.add(alert)
            for exp in expected:
                fired.add((alert, exp["exp_labels"]["severity"]))
    wanted = {(alert, sev) for alert, sevs in ALERTS.items() for sev in sevs}
    assert sorted(wanted - fired) == [], "alerts (and severities) no promtool case fires"
    assert sorted(set(ALERTS) - silent) == [], "alerts no promtool case keeps silent"


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_every_alert_has_severity_summary_description_and_its_runbook(
    render: Render, values: tuple[Path, ...]
) -> None:
    sections = {github_anchor(h) for h in markdown_headings(TROUBLESHOOTING.read_text(), 2)}
    for rule in rules_of(rule_groups(render, values, CANARY_ON)):
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base.endswith("/docs/TROUBLESHOOTING.md"), name
        assert anchor == name.lower(), name
        assert anchor in sections, f"docs/TROUBLESHOOTING.md has no section for {name}"
        assert rule["for"], name


def test_runbook_base_comes_from_values(render: Render) -> None:
    groups = rule_groups(
        render, set_values=(*CANARY_ON, "prometheusRule.runbookUrl=https://wiki.example/rb")
    )
    urls = {r["annotations"]["runbook_url"] for r in rules_of(groups) if "alert" in r}
    assert urls == {f"https://wiki.example/rb#{a.lower()}" for a in ALERTS}


def test_thresholds_and_windows_come_from_values(render: Render) -> None:
    groups = rule_groups(
        render,
        set_values=(
            "prometheusRule.alerts.latency.thresholdSeconds=0.3",
            "prometheusRule.alerts.latency.objective=0.99",
            "prometheusRule.alerts.serviceDown.for=3m",
            "prometheusRule.alerts.errorRatio.window=10m",
            "prometheusRule.alerts.cacheRedisDown.for=20s",
        ),
    )
    by_name = {r.get("alert") or r["record"]: r for r in rules_of(groups)}
    assert by_name["ResNetServingDown"]["for"] == "3m"
    assert by_name["ResNetServingCacheRedisDown"]["for"] == "20s"
    assert "for 20s" in " ".join(
        by_name["ResNetServingCacheRedisDown"]["annotations"]["description"].split()
    )
    assert 'le="0.3"' in by_name["resnet_serving:latency_slow:ratio_rate5m"]["expr"]
    assert "> 0.3" in by_name["ResNetServingHighLatency"]["expr"]
    assert "(1 - 0.99)" in by_name["ResNetServingLatencyBudgetBurn"]["expr"]
    assert "[10m]" in by_name["ResNetServingHighErrorRatio"]["expr"]


def test_latency_threshold_choices_are_the_apps_buckets(
    metrics_text: str, offline_chart: Path
) -> None:
    """values.schema.json lists the thresholds as the le values the app really writes."""
    import json

    schema = json.loads((offline_chart / "values.schema.json").read_text())
    alerts = schema["properties"]["prometheusRule"]["properties"]["alerts"]
    choices = alerts["properties"]["latency"]["properties"]["thresholdSeconds"]["enum"]
    written = set(
        re.findall(r'^request_duration_seconds_bucket\{[^}]*le="([^"]+)"', metrics_text, re.M)
    )
    assert written, "no request_duration_seconds buckets on /metrics"
    assert set(choices) == written - {"+Inf"}


def test_slo_recording_rules_cover_every_burn_rate_window(render: Render) -> None:
    groups = rule_groups(render, set_values=CANARY_ON)
    recorded = {r["record"] for r in rules_of(groups) if "record" in r}
    read = {
        name
        for r in rules_of(groups)
        if "alert" in r
        for name in metric_names(r["expr"])
        if name.startswith(RECORDING_RULE_PREFIX)
    }
    assert read
    assert read <= recorded


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_rules_reference_only_series_the_app_exports(
    render: Render, metrics_text: str, values: tuple[Path, ...]
) -> None:
    """Read from the app's real /metrics page: a rule on a metric the app does not export (or
    no longer exports) fails here. Cluster series are named in CLUSTER_SERIES; the series of a
    configured Redis (REDIS_ONLY_SERIES; this app has none) and of a shadow target
    (SHADOW_ONLY_SERIES) are checked by the real Prometheus test, whose app has both."""
    groups = rule_groups(render, values, CANARY_ON)
    recorded = {r["record"] for r in rules_of(groups) if "record" in r}
    known = declared_series(metrics_text) | PROMETHEUS_SERIES | set(CLUSTER_SERIES) | recorded
    known |= REDIS_ONLY_SERIES | SHADOW_ONLY_SERIES
    used = {name for r in rules_of(groups) for name in metric_names(r["expr"])}
    assert "request_count_total" in used
    assert sorted(used - known) == [], "series that neither the app nor the cluster exports"


def test_redis_series_are_absent_without_a_redis(metrics_text: str, render: Render) -> None:
    """ResNetServingCacheRedisDown must not fire where no Redis is configured: it reads only
    series that an app without a Redis has no sample of."""
    samples = {s.name for f in text_string_to_metric_families(metrics_text) for s in f.samples}
    assert "model_ready" in samples
    assert not samples & REDIS_ONLY_SERIES
    rule = next(
        r for r in rules_of(rule_groups(render)) if r.get("alert") == "ResNetServingCacheRedisDown"
    )
    assert metric_names(rule["expr"]) <= REDIS_ONLY_SERIES


def test_metric_name_check_catches_a_name_the_app_does_not_export(metrics_text: str) -> None:
    known = declared_series(metrics_text)
    assert {"request_count_total", "request_duration_seconds_bucket", "model_ready"} <= known
    expr = 'sum(rate(request_total{job="x"}[5m])) / sum(rate(request_count_total{job="x"}[5m]))'
    assert metric_names(expr) - known == {"request_total"}


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{route=~"/p.*", le!="1"}'
        "[$__rate_interval]))) > on (job) group_left (x) b offset 5m unless c and "
        'label_replace(up{job="j"}, "h", "$1", "job", "(.+)") or vector(0) * '
        'd:recorded:rate5m{a="sum(x)"} / inf'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "up", "d:recorded:rate5m"}
    assert metric_names('label_values(model_info{namespace=~"$ns"}, job)') == {"model_info"}


def group_names(groups: list[dict[str, Any]]) -> list[str]:
    return [g["name"] for g in groups]


def test_canary_alert_only_with_a_canary_and_the_ab_recordings_always(render: Render) -> None:
    """The per-version recordings serve one version too (the A/B dashboard, a canary started
    later); the alert needs two versions: without a canary, or with it turned off, it is not
    rendered (Prometheus holds no rule that could never fire)."""
    without = rule_groups(render)
    switched_off = rule_groups(
        render, set_values=(*CANARY_ON, "prometheusRule.alerts.canaryWorse.enabled=false")
    )
    with_canary = rule_groups(render, set_values=CANARY_ON)
    for groups in (without, switched_off):
        assert AB_GROUP in group_names(groups)
        assert AB_ALERTS_GROUP not in group_names(groups)
        assert CANARY_ALERT not in {r.get("alert") for r in rules_of(groups)}
    assert group_names(with_canary)[-2:] == [AB_GROUP, AB_ALERTS_GROUP]
    (alerts_group,) = [g for g in with_canary if g["name"] == AB_ALERTS_GROUP]
    assert [r["alert"] for r in alerts_group["rules"]] == [CANARY_ALERT]

    def recordings(groups: list[dict[str, Any]]) -> list[str]:
        (ab,) = [g for g in groups if g["name"] == AB_GROUP]
        return [r["record"] for r in ab["rules"]]

    assert recordings(without) == recordings(with_canary)
    assert all(r.startswith("namespace_job_model_version:") for r in recordings(without))
    for window in ("5m", "10m"):  # the dashboards' window, and the alert's
        assert f"namespace_job_model_version:api_requests_5xx:ratio_rate{window}" in recordings(
            without
        )


def test_canary_alert_compares_the_two_versions_with_the_thresholds_of_values(
    render: Render,
) -> None:
    groups = rule_groups(
        render,
        set_values=(
            *CANARY_ON,
            "modelVersion=stable-a",
            "canary.modelVersion=cand-b",
            "prometheusRule.alerts.canaryWorse.window=30m",
            "prometheusRule.alerts.canaryWorse.for=15m",
            "prometheusRule.alerts.canaryWorse.errorRatioMargin=0.05",
            "prometheusRule.alerts.canaryWorse.errorRatioFactor=3",
            "prometheusRule.alerts.canaryWorse.latencyFactor=2",
            "prometheusRule.alerts.canaryWorse.minRequestRate=1",
            "prometheusRule.alerts.canaryWorse.severity=critical",
        ),
    )
    rule = next(r for r in rules_of(groups) if r.get("alert") == CANARY_ALERT)
    expr = " ".join(rule["expr"].split())
    sel = 'job="rel-resnet-serving", namespace="serving"'
    canary, stable = f'{{{sel}, model_version="cand-b"}}', f'{{{sel}, model_version="stable-a"}}'
    errors = "namespace_job_model_version:api_requests_5xx:ratio_rate30m"
    p95 = "namespace_job_model_version:request_duration_seconds:p95_rate30m"
    rate = "namespace_job_model_version:api_requests:rate30m"
    assert f"{errors}{canary} > on (namespace, job) group_left () ({errors}{stable} + 0.05)" in expr
    assert f"{errors}{canary} > on (namespace, job) group_left () ({errors}{stable} * 3)" in expr
    assert f"{p95}{canary} > on (namespace, job) group_left () ({p95}{stable} * 2)" in expr
    assert expr.endswith(f"and {rate}{canary} >= 1 and on (namespace, job) {rate}{stable} >= 1")
    assert rule["for"] == "15m"
    assert rule["labels"]["severity"] == "critical"
    description = " ".join(rule["annotations"]["description"].split())
    assert description.startswith("Over the last 30m, canary cand-b against stable stable-a")
    recorded = {r["record"] for r in rules_of(groups) if "record" in r}
    assert {errors, p95, rate} <= recorded


def test_canary_alert_names_the_chart_default_versions(render: Render) -> None:
    """The promtool cases (promtool/ab.test.yaml) label their series with these versions."""
    rule = next(
        r
        for r in rules_of(rule_groups(render, set_values=CANARY_ON))
        if r.get("alert") == CANARY_ALERT
    )
    assert f'model_version="{CANARY_VERSION}"' in rule["expr"]
    assert f'model_version="{STABLE_VERSION}"' in rule["expr"]


def test_promtool_canary_cases_fail_with_a_lower_traffic_minimum(
    render: Render, promtool_bin: Path, tmp_path: Path
) -> None:
    """The silent case under the traffic minimum is silent because of the minimum: lowered, the
    canary that fails a third of its requests fires."""
    groups = rule_groups(
        render, set_values=(*CANARY_ON, "prometheusRule.alerts.canaryWorse.minRequestRate=0.01")
    )
    write_rules_file(groups, tmp_path / RULES_FILE)
    case = Path(shutil.copy(PROMTOOL_TESTS / "ab.test.yaml", tmp_path / "ab.test.yaml"))
    proc = subprocess.run(
        [str(promtool_bin), "test", "rules", case.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"alertname: {CANARY_ALERT}, time: 20m" in output
    assert output.count("alertname:") == 1, output
