"""Issue 7 in the chart: API keys from a Secret (never the ConfigMap), /metrics on a separate
port scraped there, and SIGTERM handling that fits in the pod's grace period."""

from __future__ import annotations

import pytest

from chart.chartkit import Helm, Manifest, Render, only
from chart.chartkit import template_args as args_for

FULLNAME = "rel-resnet-serving"
KEY = "k" * 20


def container(manifests: list[Manifest]) -> dict[str, object]:
    pod = only(manifests, "Deployment")["spec"]["template"]
    c: dict[str, object] = pod["spec"]["containers"][0]
    return c


def env_of(manifests: list[Manifest]) -> dict[str, object]:
    return {e["name"]: e for e in container(manifests)["env"]}  # type: ignore[attr-defined]


def test_no_api_keys_by_default(render: Render) -> None:
    manifests = render()
    assert "SERVING_API_KEYS" not in env_of(manifests)
    assert not [m for m in manifests if m["kind"] == "Secret"]


def test_chart_made_secret_feeds_the_container_and_the_helm_test(render: Render) -> None:
    manifests = render(set_values=[f"apiKeys.keys[0]={KEY}", f"apiKeys.keys[1]={KEY}x"])
    secret = only(manifests, "Secret", f"{FULLNAME}-api-keys")
    assert secret["stringData"]["api-keys"] == f"{KEY},{KEY}x"
    ref = env_of(manifests)["SERVING_API_KEYS"]["valueFrom"]["secretKeyRef"]  # type: ignore[index]
    assert ref == {"name": f"{FULLNAME}-api-keys", "key": "api-keys"}
    annotations = only(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/api-keys" in annotations  # rotating keys rolls the pods
    test_pod = only(manifests, "Pod")
    test_env = {e["name"]: e for e in test_pod["spec"]["containers"][0]["env"]}
    assert test_env["API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULLNAME}-api-keys"
    configmap = only(manifests, "ConfigMap", FULLNAME)
    assert KEY not in str(configmap)


def test_existing_secret_is_referenced_not_created(render: Render) -> None:
    manifests = render(
        set_values=["apiKeys.existingSecret=team-keys", "apiKeys.existingSecretKey=keys"]
    )
    assert not [m for m in manifests if m["kind"] == "Secret"]
    ref = env_of(manifests)["SERVING_API_KEYS"]["valueFrom"]["secretKeyRef"]  # type: ignore[index]
    assert ref == {"name": "team-keys", "key": "keys"}
    annotations = only(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/api-keys" not in annotations


def test_short_api_key_is_refused_by_the_schema(helm: Helm, offline_chart: object) -> None:
    result = helm(
        *args_for(offline_chart, set_values=["apiKeys.keys[0]=short"]),  # type: ignore[arg-type]
        check=False,
    )
    assert result.returncode != 0
    assert "apiKeys" in result.stderr


def test_api_keys_in_the_configmap_are_refused(helm: Helm, offline_chart: object) -> None:
    result = helm(
        *args_for(offline_chart, set_values=[f"config.SERVING_API_KEYS={KEY}"]),  # type: ignore[arg-type]
        check=False,
    )
    assert result.returncode != 0


def test_separate_metrics_port_is_exposed_and_scraped(render: Render) -> None:
    manifests = render(
        set_values=[
            "config.SERVING_METRICS_PORT=9100",
            "serviceMonitor.enabled=true",
            "networkPolicy.enabled=true",
        ]
    )
    ports = container(manifests)["ports"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in ports  # type: ignore[operator]
    service_ports = only(manifests, "Service")["spec"]["ports"]
    assert {
        "name": "metrics",
        "port": 9100,
        "targetPort": "metrics",
        "protocol": "TCP",
    } in service_ports
    endpoint = only(manifests, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics"
    policy_ports = only(manifests, "NetworkPolicy")["spec"]["ingress"][0]["ports"]
    assert {"port": "metrics", "protocol": "TCP"} in policy_ports


def test_metrics_on_the_http_port_by_default(render: Render) -> None:
    manifests = render(set_values=["serviceMonitor.enabled=true"])
    assert only(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
    # No `metrics` port; the Service's other ports (`grpc`) are the protocol's, not /metrics.
    assert "metrics" not in [p["name"] for p in only(manifests, "Service")["spec"]["ports"]]


@pytest.mark.parametrize(
    ("grace", "pre_stop", "graceful", "ok"),
    [
        (30, 5, 20, True),  # the defaults: 5 + 20 + 2 <= 30
        (27, 5, 20, True),
        (26, 5, 20, False),
        (30, 10, 20, False),
        (60, 10, 45, True),
    ],
)
def test_shutdown_must_fit_in_the_grace_period(
    helm: Helm, offline_chart: object, grace: int, pre_stop: int, graceful: int, ok: bool
) -> None:
    result = helm(
        *args_for(
            offline_chart,  # type: ignore[arg-type]
            set_values=[
                f"terminationGracePeriodSeconds={grace}",
                f"lifecycle.preStopSleepSeconds={pre_stop}",
                f"config.SERVING_GRACEFUL_TIMEOUT_S={graceful}",
            ],
        ),
        check=False,
    )
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "terminationGracePeriodSeconds" in result.stderr
