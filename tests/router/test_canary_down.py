"""A canary that goes away costs no request: real nginx running the chart's config in front of
two real app processes (conftest.py), clients sending predictions without pause over HTTP and
gRPC while the canary's process is killed (SIGKILL: no drain, connections reset). The canary's
upstream has the stable as its backup, and a connection that fails is retried once, POSTs
included: what would have gone to the canary, unpinned, by client id or pinned by
`X-Model-Version`, is served by the stable with 200, and its answer says so
(X-Model-Version: v1).

HTTP requests in flight on the canary when it dies are retried by nginx too (it holds the whole
body). gRPC calls in flight cannot be: nginx streams a gRPC request to the upstream as it comes
(ngx_http_grpc_module always sets request_body_no_buffering) and never resends a body it began
to send, so it answers them UNAVAILABLE (the router's own `@grpc_unavailable`), the status that
gRPC's retry policy is for. The gRPC clients here retry UNAVAILABLE as gRPC recommends (the
service config below): with that, no call fails either."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter

import grpc
import httpx
import pytest

from helpers.images import photo_bytes
from router.routerkit import (
    INFER,
    MODEL,
    V1,
    V2,
    RouterConfig,
    StartRouter,
    Versions,
    exchange,
    grpc_versions,
    infer_request,
    infer_until,
    predict_until,
    versions_of,
)

pytestmark = pytest.mark.slow

PHOTO = photo_bytes("grace_hopper")
HTTP_CLIENTS = 8
GRPC_CLIENTS = 2
BEFORE_S = 2.0
AFTER_S = 3.0
# gRPC's standard retry policy (a service config), for UNAVAILABLE only.
RETRY_UNAVAILABLE = json.dumps({"methodConfig": [{
    "name": [{"service": "inference.GRPCInferenceService"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
}]})  # fmt: skip


def test_with_the_canary_killed_its_requests_are_served_by_the_stable(
    versions: Versions, router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(50))
    port = router.ports.http
    assert set(versions_of(exchange(port, [{}] * 200))) == {V1, V2}
    clients = [{"X-Client-Id": f"client-{i}"} for i in range(100)]
    by_client = exchange(port, clients)
    on_canary = [c for c, a in zip(clients, by_client, strict=True) if a.version == V2]
    assert on_canary
    canary = versions[V2].process
    assert canary.proc is not None
    outcomes: Counter[str] = Counter()
    answered_by: Counter[str | None] = Counter()
    request = infer_request(MODEL, PHOTO).SerializeToString()

    async def scenario() -> None:
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=HTTP_CLIENTS)
        async with httpx.AsyncClient(base_url=router.base_url, timeout=60, limits=limits) as c:
            # Half of the clients unpinned (50% to the canary), half pinned to the canary.
            pins = ["", V2] * (HTTP_CLIENTS // 2)
            load = [
                asyncio.create_task(
                    predict_until(c, stop, PHOTO, _headers(pin), outcomes, answered_by)
                )
                for pin in pins
            ]
            # gRPC pinned to the canary, with gRPC's standard retry of UNAVAILABLE.
            options = [("grpc.service_config", RETRY_UNAVAILABLE), ("grpc.enable_retries", 1)]
            load += [
                asyncio.create_task(
                    infer_until(
                        router.grpc_target,
                        stop,
                        request,
                        outcomes,
                        metadata=(("x-model-version", V2),),
                        options=options,
                    )
                )
                for _ in range(GRPC_CLIENTS)
            ]
            await asyncio.sleep(BEFORE_S)
            os.killpg(canary.pid, signal.SIGKILL)  # the app and anything it started
            await asyncio.to_thread(canary.proc.wait, 30)  # type: ignore[union-attr]
            await asyncio.sleep(AFTER_S)
            stop.set()
            await asyncio.gather(*load)

    asyncio.run(scenario())
    failed = {k: n for k, n in outcomes.items() if k not in ("http 200", "grpc OK")}
    assert not failed, (failed, outcomes)
    assert outcomes["grpc OK"] > 0, outcomes
    assert answered_by[V1] > 0, answered_by

    # With the canary gone: unpinned, pinned and sticky requests, HTTP and gRPC, all from v1.
    assert versions_of(exchange(port, [{}] * 200)) == {V1: 200}
    assert versions_of(exchange(port, [{"X-Model-Version": V2}] * 100)) == {V1: 100}
    assert versions_of(exchange(port, on_canary)) == {V1: len(on_canary)}
    target = router.grpc_target
    assert set(grpc_versions(target, [[]] * 100)) == {V1}
    assert set(grpc_versions(target, [[("x-model-version", V2)]] * 100)) == {V1}
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary(INFER)
        answer, call = infer.with_call(request, metadata=(("x-model-version", V2),), timeout=60)
        assert dict(call.initial_metadata())["x-model-version"] == V1
    assert answer


def _headers(pin: str) -> dict[str, str]:
    headers = {"content-type": "image/jpeg"}
    if pin:
        headers["X-Model-Version"] = pin
    return headers
