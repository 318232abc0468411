"""Monitoring wired by the chart's own objects: the Prometheus run by the prometheus-operator
discovers the ServiceMonitor, scrapes every pod on the metrics port, loads every rule of the
PrometheusRule, and the service-down alert fires when the Deployment is scaled to zero and
resolves when it comes back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from e2e.kube import Cluster, wait_until

DOWN_ALERT = "ResNetServingDown"


def _release_targets(cluster: Cluster) -> list[dict[str, Any]]:
    targets = cluster.prometheus("/api/v1/targets", state="active")["activeTargets"]
    return [
        t
        for t in targets
        if t["labels"].get("namespace") == cluster.namespace
        and f"serviceMonitor/{cluster.namespace}/" in t.get("scrapePool", "")
    ]


def _loaded_rules(cluster: Cluster) -> dict[str, dict[str, Any]]:
    groups = cluster.prometheus("/api/v1/rules")["groups"]
    return {rule["name"]: rule for group in groups for rule in group["rules"]}


def _firing(cluster: Cluster, name: str) -> bool:
    alerts = cluster.prometheus("/api/v1/alerts")["alerts"]
    return any(a["labels"].get("alertname") == name and a["state"] == "firing" for a in alerts)


@pytest.mark.timeout(600)
def test_prometheus_scrapes_every_pod_on_the_metrics_port_and_loads_every_rule(
    release_ready: Cluster, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    pods = {p["status"]["podIP"] for p in cluster.ready_pods()}
    [monitor] = cluster.get(
        "servicemonitor", "-l", f"app.kubernetes.io/instance={cluster.release}"
    )["items"][:1]
    port_name = monitor["spec"]["endpoints"][0]["port"]

    def all_up() -> list[dict[str, Any]] | None:
        up = [t for t in _release_targets(cluster) if t["health"] == "up"]
        scraped = {t["labels"].get("instance", "").rsplit(":", 1)[0] for t in up}
        return up if pods <= scraped else None

    started = time.monotonic()
    up = wait_until("Prometheus to scrape every pod", all_up, 240, 3)
    # The port the ServiceMonitor names, by Endpoints or EndpointSlice discovery.
    ports = {
        t["discoveredLabels"].get("__meta_kubernetes_endpointslice_port_name")
        or t["discoveredLabels"].get("__meta_kubernetes_endpoint_port_name")
        for t in up
    }
    assert ports == {port_name}, ports

    expected = {
        rule.get("alert") or rule.get("record")
        for item in cluster.get(
            "prometheusrule", "-l", f"app.kubernetes.io/instance={cluster.release}"
        )["items"]
        for group in item["spec"]["groups"]
        for rule in group["rules"]
    }
    assert expected, "the release has no PrometheusRule"
    loaded = wait_until(
        "every rule of the PrometheusRule in Prometheus",
        lambda: rules if expected <= set(rules := _loaded_rules(cluster)) else None,
        240,
        3,
    )
    unhealthy = {
        n: r.get("lastError")
        for n, r in loaded.items()
        if n in expected and r.get("health") == "err"
    }
    assert not unhealthy, unhealthy
    figures["prometheus"] = {
        "targets_up": len(up),
        "port": port_name,
        "rules_loaded": len(expected),
        "seconds_to_discover": round(time.monotonic() - started, 1),
        "job": up[0]["labels"].get("job"),
    }


@pytest.mark.timeout(900)
def test_service_down_alert_fires_at_zero_replicas_and_resolves(
    release_ready: Cluster, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    name = cluster.deployment()["metadata"]["name"]
    replicas = int(cluster.deployment()["spec"]["replicas"])
    # The chart's default waits 5 minutes; the threshold is a value, so the test shortens it
    # (and proves that a values change reaches Prometheus through the operator).
    cluster.upgrade("prometheusRule.alerts.serviceDown.for=20s")
    try:
        wait_until(
            f"{DOWN_ALERT} reloaded with for: 20s",
            lambda: _loaded_rules(cluster).get(DOWN_ALERT, {}).get("duration") == 20,
            240,
            3,
        )
        assert not _firing(cluster, DOWN_ALERT)
        cluster.kubectl_("scale", f"deployment/{name}", "-n", cluster.namespace, "--replicas=0")
        down_at = time.monotonic()
        wait_until(f"{DOWN_ALERT} firing", lambda: _firing(cluster, DOWN_ALERT), 300, 3)
        fired_at = time.monotonic()
        cluster.kubectl_(
            "scale", f"deployment/{name}", "-n", cluster.namespace, f"--replicas={replicas}"
        )
        cluster.wait_rolled_out()
        back_at = time.monotonic()
        wait_until(f"{DOWN_ALERT} resolved", lambda: not _firing(cluster, DOWN_ALERT), 300, 3)
        resolved_at = time.monotonic()
    finally:
        cluster.kubectl_(
            "scale", f"deployment/{name}", "-n", cluster.namespace, f"--replicas={replicas}"
        )
        cluster.upgrade("prometheusRule.alerts.serviceDown.for=5m")
    figures["service_down_alert"] = {
        "for": "20s",
        "seconds_to_fire": round(fired_at - down_at, 1),
        "seconds_to_resolve_after_ready": round(resolved_at - back_at, 1),
    }
