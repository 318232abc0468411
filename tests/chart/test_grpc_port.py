"""Issue 13 in the chart: the gRPC port of the Open Inference Protocol, as the app reads it
from the ConfigMap, is a container port, a Service port and a NetworkPolicy port with each
values file, and nowhere when SERVING_GRPC_PORT is 0; the probes stay on HTTP.

helm-unittest (charts/resnet-serving/tests/) covers the templates value by value; these render
the real values files and read the port through app.settings.config.Settings, so the chart
and the app cannot disagree on it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.settings.config import ENV_PREFIX, Settings
from chart.chartkit import VALUES_DEV, VALUES_PROD, Manifest, Render, only, release_service

VALUES = pytest.mark.parametrize(
    "values", [(), (VALUES_DEV,), (VALUES_PROD,)], ids=["defaults", "dev", "prod"]
)
POLICY_ON = "networkPolicy.enabled=true"
FULLNAME = "rel-resnet-serving"


def app_settings(manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the pod's environment gives them to the app (the ConfigMap via envFrom)."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in only(manifests, "ConfigMap", FULLNAME)["data"].items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def container(manifests: list[Manifest]) -> dict[str, Any]:
    spec = only(manifests, "Deployment")["spec"]["template"]["spec"]
    c: dict[str, Any] = spec["containers"][0]
    return c


def named(ports: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [p for p in ports if p.get("name") == name or p.get("port") == name]


@VALUES
def test_the_apps_grpc_port_is_exposed_by_pod_service_and_policy(
    render: Render, values: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(values, [POLICY_ON])
    settings = app_settings(manifests, monkeypatch)
    assert settings.grpc_port > 0  # on in every shipped values file
    [pod_port] = named(container(manifests)["ports"], "grpc")
    assert pod_port == {"name": "grpc", "containerPort": settings.grpc_port, "protocol": "TCP"}
    [service_port] = named(release_service(manifests)["spec"]["ports"], "grpc")
    assert service_port["port"] == settings.grpc_port
    assert service_port["targetPort"] == "grpc"
    assert service_port["appProtocol"] == "kubernetes.io/h2c"
    [rule] = only(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert named(rule["ports"], "grpc") == [{"port": "grpc", "protocol": "TCP"}]


@VALUES
def test_the_probes_stay_on_http(render: Render, values: tuple[Path, ...]) -> None:
    c = container(render(values))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert set(c[probe]) & {"grpc", "tcpSocket", "exec"} == set(), probe
        assert c[probe]["httpGet"]["port"] == "http", probe


def test_dev_pins_the_grpc_node_port_beside_the_http_one(render: Render) -> None:
    ports = release_service(render([VALUES_DEV]))["spec"]["ports"]
    assert [(p["name"], p.get("nodePort")) for p in ports] == [("http", 30080), ("grpc", 30081)]


@VALUES
def test_zero_turns_grpc_off_in_the_app_and_everywhere_in_the_chart(
    render: Render, values: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(values, [POLICY_ON, "config.SERVING_GRPC_PORT=0"])
    assert app_settings(manifests, monkeypatch).grpc_port == 0
    assert named(container(manifests)["ports"], "grpc") == []
    assert named(release_service(manifests)["spec"]["ports"], "grpc") == []
    [rule] = only(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert named(rule["ports"], "grpc") == []
