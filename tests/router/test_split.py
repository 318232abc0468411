"""The router's split, with the real nginx running the chart's config in front of two real app
processes (conftest.py): requests without a pin or a client id go to the canary at
`canary.trafficPercent`, a client id always to the same version, over HTTP and gRPC alike.

The share is judged over 5,000 requests per percent (the issue asks for more than 2,000): the
binomial standard deviation is at most 0.71 points (at 50%), so the ±3-point tolerance is more
than 4 of them, and a correct split fails one of the four checks here about once in 20,000
runs. Each answer says which version gave it (X-Model-Version)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from router.routerkit import (
    V1,
    V2,
    RouterConfig,
    StartRouter,
    exchange,
    grpc_versions,
    versions_of,
)

pytestmark = pytest.mark.slow

REQUESTS = 5000
TOLERANCE_POINTS = 3.0
CLIENTS = [f"client-{i}" for i in range(100)]
REPEATS = 5


def canary_share(seen: dict[str | None, int]) -> float:
    total = sum(seen.values())
    return 100.0 * seen.get(V2, 0) / total


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_requests_without_pin_or_client_id_split_at_the_percent(
    percent: int,
    router_config: RouterConfig,
    start_router: StartRouter,
    record_property: Callable[[str, object], None],
) -> None:
    router = start_router(router_config(percent))
    seen = versions_of(exchange(router.ports.http, [{}] * REQUESTS))
    assert set(seen) == {V1, V2}, seen
    share = canary_share(seen)
    record_property("canary_share_percent", round(share, 2))
    assert abs(share - percent) <= TOLERANCE_POINTS, seen


def test_a_client_id_always_lands_on_the_same_version(
    router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(30))
    # Each client's requests spread over the run and over the connections.
    headers = [{"X-Client-Id": client} for _ in range(REPEATS) for client in CLIENTS]
    answers = exchange(router.ports.http, headers)
    versions_of(answers)  # every one a 200
    by_client: dict[str, set[str | None]] = {}
    for sent, answer in zip(headers, answers, strict=True):
        by_client.setdefault(sent["X-Client-Id"], set()).add(answer.version)
    assert all(len(seen) == 1 for seen in by_client.values()), by_client
    on_canary = [c for c, seen in by_client.items() if seen == {V2}]
    on_stable = [c for c, seen in by_client.items() if seen == {V1}]
    assert len(on_canary) + len(on_stable) == len(CLIENTS)
    assert on_canary, "no client on the canary at 30%"
    assert on_stable, "no client on the stable at 30%"

    # gRPC metadata `x-client-id` is the same key: a client that uses both transports sees one
    # version.
    metadata = [[("x-client-id", client)] for _ in range(2) for client in CLIENTS]
    over_grpc = grpc_versions(router.grpc_target, metadata)
    for (md,), version in zip(metadata, over_grpc, strict=True):
        client = md[1]
        assert by_client[client] == {version}, (client, by_client[client], version)


def test_grpc_calls_without_pin_or_client_id_split_at_the_percent(
    router_config: RouterConfig,
    start_router: StartRouter,
    record_property: Callable[[str, object], None],
) -> None:
    router = start_router(router_config(50))
    seen = versions_of_grpc(grpc_versions(router.grpc_target, [[]] * REQUESTS))
    share = canary_share(seen)
    record_property("canary_share_percent", round(share, 2))
    assert abs(share - 50) <= TOLERANCE_POINTS, seen


def versions_of_grpc(versions: list[str | None]) -> dict[str | None, int]:
    seen: dict[str | None, int] = {}
    for version in versions:
        seen[version] = seen.get(version, 0) + 1
    assert set(seen) == {V1, V2}, seen
    return seen
