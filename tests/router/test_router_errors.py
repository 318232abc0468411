"""The router's own answers, when no app gives one (real nginx running the chart's config; the
upstreams are stand-ins that misbehave on purpose: routerkit.FakeUpstream, or a port nothing
listens on). They are JSON in the app's error format, with the request id, and gRPC statuses on
the gRPC port (the router's 413 is in test_passthrough.py, in front of the real apps):
- no server of the version reachable: 503 `upstream_unavailable` with Retry-After (UNAVAILABLE);
- no answer within the longest deadline plus the margin: 504 `upstream_timeout`
  (DEADLINE_EXCEEDED), and a timeout is never retried elsewhere;
- a connection the upstream closes before answering is retried once, POSTs included."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from bench.router import Ports, service_host
from harness.process import free_port
from router.routerkit import (
    MODEL,
    V1,
    V2,
    FakeUpstream,
    RouterConfig,
    StartRouter,
    grpc_error,
    infer_call,
    infer_request,
)

pytestmark = pytest.mark.slow

STABLE, CANARY = service_host("stable"), service_host("canary")
# The router waits 1 + 1 s.
SHORT_WAIT = ("config.SERVING_REQUEST_TIMEOUT_S=1", "config.SERVING_MAX_REQUEST_TIMEOUT_S=1",
              "router.timeoutMarginSeconds=1")  # fmt: skip


@pytest.fixture
def fakes() -> Iterator[list[FakeUpstream]]:
    made: list[FakeUpstream] = []
    yield made
    for fake in made:
        fake.close()


def fake(fakes: list[FakeUpstream], behaviour: str | list[str], version: str) -> FakeUpstream:
    actions = [behaviour] if isinstance(behaviour, str) else behaviour
    upstream = FakeUpstream(lambda n: actions[min(n, len(actions)) - 1], version)
    fakes.append(upstream)
    return upstream


def router_error(answer: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    assert "x-model-version" not in answer.headers
    body: dict[str, object] = answer.json()
    assert body["error"]["code"] == code  # type: ignore[index]
    assert body["request_id"] == answer.headers["x-request-id"]
    return body


def test_no_reachable_server_is_503_upstream_unavailable(
    router_config: RouterConfig, router_factory: StartRouter
) -> None:
    nowhere = Ports(http=free_port(), grpc=free_port())  # nothing listens there
    router = router_factory(router_config(50), {STABLE: nowhere, CANARY: nowhere})
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        for pin in (V1, V2, ""):
            answer = client.post("/predict", content=b"image", headers={"X-Model-Version": pin})
            router_error(answer, 503, "upstream_unavailable")
            assert answer.headers["retry-after"] == "1"
            assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    with grpc.insecure_channel(router.grpc_target) as channel:
        error = grpc_error(lambda: infer_call(channel)(infer_request(MODEL, b"image"), timeout=30))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_no_answer_in_time_is_504_upstream_timeout_and_is_not_retried(
    router_config: RouterConfig, router_factory: StartRouter, fakes: list[FakeUpstream]
) -> None:
    canary, stable = fake(fakes, "hang", V2), fake(fakes, "hang", V1)
    upstreams = {STABLE: Ports(http=stable.port, grpc=stable.port),
                 CANARY: Ports(http=canary.port, grpc=canary.port)}  # fmt: skip
    router = router_factory(router_config(100, *SHORT_WAIT), upstreams)
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        started = time.monotonic()
        answer = client.post("/predict", content=b"image", headers={"X-Request-ID": "slow-1"})
        waited = time.monotonic() - started
    body = router_error(answer, 504, "upstream_timeout")
    assert body["request_id"] == "slow-1"
    assert waited >= 2.0  # the router waited its full time (a lower bound, never an upper one)
    # The canary had it; its backup, the stable, never saw it: a timeout is not retried.
    assert canary.accepted == 1
    assert stable.accepted == 0
    with grpc.insecure_channel(router.grpc_target) as channel:
        error = grpc_error(lambda: infer_call(channel)(infer_request(MODEL, b"image"), timeout=30))
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert stable.accepted == 0


@pytest.mark.parametrize(("percent", "track"), [(100, "canary"), (0, "stable")])
def test_a_connection_closed_before_the_answer_is_retried_once(
    percent: int,
    track: str,
    router_config: RouterConfig,
    router_factory: StartRouter,
    fakes: list[FakeUpstream],
) -> None:
    """The canary's retry goes to its backup, the stable; the stable's to its own Service
    address again (in a cluster, a new connection to the Service may reach another pod)."""
    stable = fake(fakes, ["close", "ok"], V1)
    canary = fake(fakes, "close", V2)
    upstreams = {STABLE: Ports(http=stable.port, grpc=stable.port),
                 CANARY: Ports(http=canary.port, grpc=canary.port)}  # fmt: skip
    router = router_factory(router_config(percent), upstreams)
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        answer = client.post("/predict", content=b"image")
    if track == "canary":
        # The canary closed it; the stable's first connection, closed too, is not retried.
        assert canary.accepted == 1
        assert stable.accepted == 1
        router_error(answer, 503, "upstream_unavailable")
    else:
        assert stable.accepted == 2, "the stable's failed connection was not retried"
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == V1
