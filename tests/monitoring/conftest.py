"""Fixtures of the monitoring tests: the chart rendered offline (the chart tests' own fixtures),
promtool and prometheus from the Debian `prometheus` package, redis-server from the Debian
`redis-server` package, the app's real /metrics page."""

from __future__ import annotations

from pathlib import Path

import pytest

# The chart tests' rendering (helm from .tools, the offline chart with the stand-in for the
# kube-prometheus-stack dependency), reused as they are.
from chart.conftest import helm, helm_bin, offline_chart, render
from fastapi.testclient import TestClient

from helpers.tools import tool

__all__ = ["helm", "helm_bin", "metrics_text", "offline_chart", "prometheus_bin", "promtool_bin",
           "redis_bin", "render"]  # fmt: skip

PROMETHEUS_HINT = "run scripts/install.sh (Debian package `prometheus`)"
REDIS_HINT = "run scripts/install.sh (Debian package `redis-server`)"


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    return tool("promtool", hint=PROMETHEUS_HINT)


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    return tool("prometheus", hint=PROMETHEUS_HINT)


@pytest.fixture(scope="session")
def redis_bin() -> Path:
    """redis-server: the real Prometheus test gives the app a Redis, so the cache's Redis
    panels have data."""
    return tool("redis-server", hint=REDIS_HINT)


@pytest.fixture(scope="session")
def metrics_text(client: TestClient) -> str:
    """The /metrics page of the real app (in process: resnet18, random weights). Every family
    is declared there (HELP/TYPE) even before it has a labelled child."""
    response = client.get("/metrics")
    assert response.status_code == 200
    text: str = response.text
    return text
