"""Pins through the router (real nginx, the chart's config, two real app processes: conftest.py):
a version named by the protocol's versioned path or by `X-Model-Version` (gRPC metadata
`x-model-version`) serves the request whatever the split, 0% and 100% included; the path wins
over the header, the header over the client id; an unknown label is refused by the router
itself, in the app's error format, and reaches no app."""

from __future__ import annotations

import base64
import json
import re

import grpc
import httpx
import pytest

from app.oip.grpc.grpc_predict_v2_pb2 import ServerLiveRequest
from helpers.images import photo_bytes
from router.routerkit import (
    MODEL,
    V1,
    V2,
    RouterConfig,
    StartRouter,
    exchange,
    grpc_error,
    grpc_versions,
    infer_call,
    infer_request,
    live_call,
    versions_of,
)

pytestmark = pytest.mark.slow

PHOTO = photo_bytes("grace_hopper")
REQUESTS = 200


def oip_body() -> dict[str, object]:
    """A protocol inference of one photograph (JSON, base64)."""
    data = base64.b64encode(PHOTO).decode()
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [data]}]}


@pytest.mark.parametrize(("percent", "unpinned"), [(0, V1), (100, V2)])
def test_a_pin_wins_over_the_split_even_at_0_and_100_percent(
    percent: int, unpinned: str, router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(percent))
    port = router.ports.http
    assert versions_of(exchange(port, [{}] * REQUESTS)) == {unpinned: REQUESTS}
    for label in (V1, V2):
        pinned = exchange(port, [{"X-Model-Version": label}] * REQUESTS)
        assert versions_of(pinned) == {label: REQUESTS}
        # A pin beats a client id, whichever version that id would get.
        both = [{"X-Model-Version": label, "X-Client-Id": f"c{i}"} for i in range(REQUESTS)]
        assert versions_of(exchange(port, both)) == {label: REQUESTS}
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        for label in (V1, V2):
            url = f"/v2/models/{MODEL}/versions/{label}/infer"
            answer = client.post(url, json=oip_body())
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-model-version"] == label
            assert answer.json()["model_version"] == label
            # The path wins over the header.
            other = V1 if label == V2 else V2
            answer = client.post(url, json=oip_body(), headers={"X-Model-Version": other})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-model-version"] == label
            # /predict's answer names the version too.
            answer = client.post(
                "/predict", content=PHOTO, headers={"content-type": "image/jpeg",
                                                    "X-Model-Version": label},
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-model-version"] == answer.json()["model_version"] == label


@pytest.mark.parametrize(("percent", "unpinned"), [(0, V1), (100, V2)])
def test_a_grpc_pin_wins_over_the_split(
    percent: int, unpinned: str, router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(percent))
    target = router.grpc_target
    assert set(grpc_versions(target, [[]] * REQUESTS)) == {unpinned}
    for label in (V1, V2):
        pins = [[("x-model-version", label), ("x-client-id", f"c{i}")] for i in range(REQUESTS)]
        assert set(grpc_versions(target, pins)) == {label}
    with grpc.insecure_channel(target) as channel:
        for label in (V1, V2):
            answer, call = infer_call(channel).with_call(
                infer_request(MODEL, PHOTO), metadata=(("x-model-version", label),), timeout=60
            )
            assert dict(call.initial_metadata())["x-model-version"] == label
            assert answer.model_version == label
            assert [o.name for o in answer.outputs] == ["scores"]


def test_an_unknown_label_in_the_header_is_refused_with_400(
    router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(50))
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        for path in ("/predict", "/health"):
            answer = client.post(path, content=PHOTO, headers={"X-Model-Version": "v3"})
            assert answer.status_code == 400, answer.text
            assert "x-model-version" not in answer.headers, "it reached an app"
            body = answer.json()
            assert body["error"]["code"] == "unknown_model_version"
            assert "v1, v2" in body["error"]["message"]
            assert body["request_id"] == answer.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
        sent = client.get("/health", headers={"X-Model-Version": "nope", "X-Request-ID": "r-1"})
        assert sent.status_code == 400
        assert sent.json()["request_id"] == sent.headers["x-request-id"] == "r-1"


def test_an_unknown_label_in_the_path_is_refused_with_404(
    router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(50))
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        for method, suffix in (("POST", "/infer"), ("GET", "/ready"), ("GET", "")):
            url = f"/v2/models/{MODEL}/versions/nope{suffix}"
            # Whatever the header says: the path names the version.
            answer = client.request(
                method, url, json=oip_body() if method == "POST" else None,
                headers={"X-Model-Version": V1},
            )  # fmt: skip
            assert answer.status_code == 404, (url, answer.text)
            assert "x-model-version" not in answer.headers, "it reached an app"
            body = json.loads(answer.content)  # well-formed JSON, in the protocol's shape
            assert body["code"] == "unknown_model_version"
            assert "'nope'" in body["error"]
            assert "v1, v2" in body["error"]


def test_an_unknown_grpc_label_is_invalid_argument(
    router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(50))
    unknown = (("x-model-version", "v3"),)
    with grpc.insecure_channel(router.grpc_target) as channel:
        live, infer = live_call(channel), infer_call(channel)
        for error in (
            grpc_error(lambda: live(ServerLiveRequest(), metadata=unknown, timeout=30)),
            grpc_error(lambda: infer(infer_request(MODEL, PHOTO), metadata=unknown, timeout=30)),
        ):
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "v1, v2" in error.details()
            assert "x-model-version" not in dict(error.initial_metadata()), "it reached an app"


def test_the_404_of_any_unknown_path_label_is_json(
    router_config: RouterConfig, start_router: StartRouter
) -> None:
    """The label comes from the client's URL, decoded: quotes and backslashes included."""
    router = start_router(router_config(50))
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        for label in ("a%22b", "back%5Cslash", "%22%7D%2C%22x%22%3A%221"):
            answer = client.post(f"/v2/models/{MODEL}/versions/{label}/infer", json=oip_body())
            assert answer.status_code == 404, answer.text
            body = json.loads(answer.content)
            assert set(body) == {"error", "code"}, body
            assert body["code"] == "unknown_model_version"
