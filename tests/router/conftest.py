"""Fixtures of the router tests: the chart's router config, real nginx running it on loopback,
and two real app processes in front of which it routes.

- `router_config`: the router's nginx.conf as the chart renders it (ConfigMap
  `rel-resnet-serving-router`, templates/_router_config.tpl), through the chart tests' own
  offline rendering (helm from .tools, the stand-in kube-prometheus-stack dependency);
- `versions`: `python -m app` twice, resnet18 with random weights: the stable `v1` (seed 0) and
  the canary `v2` (seed 1: another model, as the chart demands of a canary), each with its gRPC
  port; per test module, so a module that stops one stops only its own;
- `start_router`: nginx with a rendered config in front of `versions` (`router_factory`: in
  front of any upstreams, such as tests' stand-ins), bench/router.py's `Router`. The config runs as
  rendered except for addresses, ports and paths, rewritten by `bench.router.loopback_config`:
  the upstream `server` lines point at the two processes' loopback ports (the stable Service at
  v1's, the canary Service at v2's), the `listen` ports are free ones, `pid` and the
  `*_temp_path` directories are in the test's tmp dir; as root, `user root;` is added (nginx
  would otherwise run its workers as `nobody`, who cannot write there; the pod runs master and
  workers as one user). Nothing else changes.

Which version answered is what the answer says: the app's `X-Model-Version` header (gRPC
initial metadata `x-model-version`), on every answer of the app, errors and probes included.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from chart.chartkit import Render

# The chart tests' rendering, reused as it is.
from chart.conftest import helm, helm_bin, offline_chart, render

from bench.router import Ports, Router, service_host
from helpers.process import app_process, free_port
from helpers.tools import tool
from router.routerkit import (
    MODEL,
    V1,
    V2,
    RouterConfig,
    StartRouter,
    Version,
    Versions,
)

__all__ = ["helm", "helm_bin", "offline_chart", "render"]

ROUTER_CONFIGMAP = "rel-resnet-serving-router"
# The canary differs from the stable by its weights (SERVING_RANDOM_SEED), as the apps below.
CANARY = ("canary.enabled=true", "canary.config.SERVING_RANDOM_SEED=1")
APP_ENV = {
    "SERVING_MODEL_NAME": MODEL,
    "SERVING_MODEL_WEIGHTS": "random",
    "SERVING_NUM_THREADS": "1",
    "SERVING_LOG_FORMAT": "json",
    "SERVING_LOG_LEVEL": "warning",
    # Every prediction runs the model (gRPC calls cannot say `Cache-Control: no-store`).
    "SERVING_CACHE_BYTES": "0",
    # Small enough that one protocol call of 13 images overflows it (an app 503, on purpose),
    # large enough for the tests' 8 concurrent clients.
    "SERVING_MAX_QUEUE_SIZE": "12",
}


@pytest.fixture(scope="session")
def router_config(render: Render) -> RouterConfig:
    """The router's nginx.conf as rendered with the canary at `percent` (None: no canary,
    `router.enabled=true`) and any further `--set` values."""

    def make(percent: float | None = 50, *extra: str) -> str:
        if percent is None:
            values = ["router.enabled=true", *extra]
        else:
            values = [*CANARY, f"canary.trafficPercent={percent}", *extra]
        [configmap] = [
            m
            for m in render(set_values=values)
            if m["kind"] == "ConfigMap" and m["metadata"]["name"] == ROUTER_CONFIGMAP
        ]
        conf: str = configmap["data"]["nginx.conf"]
        return conf

    return make


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Versions]:
    logs = tmp_path_factory.mktemp("versions")
    started: list[Version] = []
    try:
        for seed, label in enumerate((V1, V2)):
            grpc_port = free_port()
            env = {**APP_ENV, "SERVING_MODEL_VERSION": label, "SERVING_RANDOM_SEED": str(seed),
                   "SERVING_GRPC_PORT": str(grpc_port)}  # fmt: skip
            proc = app_process(env, log_path=logs / f"{label}.log").start()
            started.append(Version(label, proc, grpc_port))
        for version in started:
            version.process.wait_ready()
        yield {v.label: v for v in started}
    finally:
        for version in started:
            version.process.terminate()


def upstreams_of(versions: Versions) -> dict[str, Ports]:
    """The stable Service played by v1, the canary Service by v2."""
    return {service_host("stable"): versions[V1].ports, service_host("canary"): versions[V2].ports}


@pytest.fixture(scope="module")
def router_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartRouter]:
    """Starts nginx with a rendered config in front of the given `upstreams` (Service host ->
    loopback ports); every router started is stopped with the module."""
    tool("nginx")
    routers: list[Router] = []

    def start(conf: str, upstreams: Mapping[str, Ports]) -> Router:
        router = Router(tmp_path_factory.mktemp("router"), conf, upstreams)
        routers.append(router)
        return router.start()

    yield start
    for router in routers:
        router.terminate()


@pytest.fixture(scope="module")
def start_router(versions: Versions, router_factory: StartRouter) -> StartRouter:
    """Starts nginx with a rendered config in front of `versions` (or other `upstreams`)."""

    def start(conf: str, upstreams: Mapping[str, Ports] | None = None) -> Router:
        return router_factory(conf, upstreams or upstreams_of(versions))

    return start
