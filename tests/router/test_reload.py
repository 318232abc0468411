"""The router's configuration changes under load without failing a request: real nginx running
the chart's config in front of two real app processes (conftest.py), clients sending predictions
without pause over HTTP (keep-alive, as clients do) and gRPC, while the test reloads nginx
(`nginx -s reload`) with the split rendered anew each time (10% -> 50% -> 90% -> 10% -> 50% ->
90% -> 100%). Every answer must be a 200 (gRPC: OK), and once the old workers have gone, the
last configuration (100%) is the one that serves.

How bench/rolling.py and tests/test_rolling_restart.py reload nginx under load, with the
config the chart renders instead of one of their own."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from helpers.images import photo_bytes
from router.routerkit import (
    MODEL,
    V1,
    V2,
    RouterConfig,
    StartRouter,
    exchange,
    infer_request,
    infer_until,
    predict_until,
    versions_of,
)

pytestmark = pytest.mark.slow

PHOTO = photo_bytes("grace_hopper")
HTTP_CLIENTS = 8
GRPC_CLIENTS = 2
SPLITS = (50, 90, 10, 50, 90, 100)  # after the first, 10
BETWEEN_RELOADS_S = 1.5


def test_reloads_with_a_new_split_fail_no_request(
    router_config: RouterConfig, start_router: StartRouter
) -> None:
    configs = {percent: router_config(percent) for percent in {10, *SPLITS}}
    router = start_router(configs[10])
    outcomes: Counter[str] = Counter()
    answered_by: Counter[str | None] = Counter()
    request = infer_request(MODEL, PHOTO).SerializeToString()

    async def scenario() -> None:
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=HTTP_CLIENTS)
        async with httpx.AsyncClient(base_url=router.base_url, timeout=60, limits=limits) as c:
            headers = {"content-type": "image/jpeg", "cache-control": "no-store"}
            load = [
                asyncio.create_task(predict_until(c, stop, PHOTO, headers, outcomes, answered_by))
                for _ in range(HTTP_CLIENTS)
            ]
            load += [
                asyncio.create_task(infer_until(router.grpc_target, stop, request, outcomes))
                for _ in range(GRPC_CLIENTS)
            ]
            await asyncio.sleep(BETWEEN_RELOADS_S)
            for percent in SPLITS:
                await asyncio.to_thread(router.reload, configs[percent])
                await asyncio.sleep(BETWEEN_RELOADS_S)
            stop.set()
            await asyncio.gather(*load)

    asyncio.run(scenario())
    failed = {k: n for k, n in outcomes.items() if k not in ("http 200", "grpc OK")}
    assert not failed, (failed, outcomes)
    assert outcomes["http 200"] > 0, outcomes
    assert outcomes["grpc OK"] > 0, outcomes
    assert set(answered_by) == {V1, V2}, answered_by
    # The last reload took effect: at 100% every request goes to the canary.
    router.settle()
    assert versions_of(exchange(router.ports.http, [{}] * 200)) == {V2: 200}
