"""The alert rules the chart renders into its PrometheusRule (from charts/resnet-serving/rules/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chart.chartkit import VALUES_DEV, VALUES_PROD, Render, only


def alerts(
    render: Render, values: tuple[Path, ...] = (), release: str = "rel"
) -> list[dict[str, Any]]:
    rule = only(render(values, ["prometheusRule.enabled=true"], release=release), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


@pytest.mark.parametrize(
    "values", [(), (VALUES_DEV,), (VALUES_PROD,)], ids=["defaults", "dev", "prod"]
)
def test_every_alert_has_an_expression_a_duration_a_severity_and_a_summary(
    render: Render, values: tuple[Path, ...]
) -> None:
    found = alerts(render, values)
    assert found
    for alert in found:
        assert alert["expr"].strip(), alert["alert"]
        assert alert["for"], alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["description"]


def test_service_down_alerts_watch_this_releases_scrape_job(render: Render) -> None:
    by_name = {a["alert"]: a for a in alerts(render, release="prod")}
    # Targets of the ServiceMonitor get job=<Service name> and the Service's namespace.
    selector = 'job="prod-resnet-serving", namespace="serving"'
    assert by_name["ResNetServingTargetDown"]["expr"] == f"up{{{selector}}} == 0"
    assert by_name["ResNetServingDown"]["expr"] == f"absent(up{{{selector}}} == 1)"
    assert by_name["ResNetServingDown"]["labels"]["severity"] == "critical"


def test_cache_redis_alert_needs_every_pod_of_this_release_to_see_redis_down(
    render: Render,
) -> None:
    """One alert per release (not per pod), a warning: the cache falling back to misses is not an
    outage. Without a Redis there is no prediction_cache_redis_up series, so it cannot fire."""
    alert = {a["alert"]: a for a in alerts(render, release="prod")}["ResNetServingCacheRedisDown"]
    selector = 'job="prod-resnet-serving", namespace="serving"'
    assert (
        alert["expr"] == f"max by (namespace, job) (prediction_cache_redis_up{{{selector}}}) == 0"
    )
    assert alert["for"] == "3m"
    assert alert["labels"]["severity"] == "warning"


def test_prod_adds_its_routing_labels_to_every_alert(render: Render) -> None:
    for alert in alerts(render, (VALUES_PROD,)):
        assert alert["labels"]["team"] == "ml-serving"
