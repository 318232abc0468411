"""What the app answers comes through the router as the app sent it (real nginx, the chart's
config, two real app processes: conftest.py): a large upload is served; the app's own refusals
(413 over its upload limit, 504 when a deadline passes, 503 when the queue cannot take the work
or the expected wait exceeds the deadline) keep their status, body and headers (Retry-After,
X-Request-ID, X-Model-Version); the request id the client sends comes back, and one is made when
it sends none.

Each comparison sends the same request (the same X-Request-ID, pinned to v1 by X-Model-Version)
to v1 directly and through the router, one after the other on idle servers: the answers must be
byte for byte the same, and every header of the app's answer (but Date) must be in the router's
unchanged."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

import grpc
import httpx
import pytest

from bench.router import Router
from harness.big_images import noise_jpeg, padded_png, png
from helpers.images import photo_bytes
from router.routerkit import (
    MODEL,
    V1,
    V2,
    RouterConfig,
    StartRouter,
    Versions,
    grpc_error,
    infer_call,
    infer_request,
)

pytestmark = pytest.mark.slow

PHOTO = photo_bytes("grace_hopper")
UPLOAD_LIMIT = 10 * 1024 * 1024  # SERVING_MAX_UPLOAD_BYTES's default, the apps' and the chart's
Send = Callable[[httpx.Client, dict[str, str]], httpx.Response]


@pytest.fixture(scope="module")
def router(router_config: RouterConfig, start_router: StartRouter) -> Router:
    return start_router(router_config(50))


def same_answer(direct: httpx.Response, routed: httpx.Response) -> None:
    assert routed.status_code == direct.status_code, (direct.text, routed.text)
    assert routed.content == direct.content
    for name, value in direct.headers.items():
        if name != "date":
            assert routed.headers.get(name) == value, (name, direct.headers, routed.headers)


def both_ways(
    versions: Versions, router: Router, send: Send, rid: str
) -> tuple[httpx.Response, httpx.Response]:
    """The request to v1 directly, then through the router pinned to v1."""
    headers = {"X-Request-ID": rid, "X-Model-Version": V1}
    with httpx.Client(base_url=versions[V1].base_url, timeout=120) as client:
        direct = send(client, headers)
    with httpx.Client(base_url=router.base_url, timeout=120) as client:
        routed = send(client, headers)
    return direct, routed


def test_a_large_upload_is_served(versions: Versions, router: Router) -> None:
    image = noise_jpeg()  # 9.8 MB, just under the limit; read whole by nginx, to a temp file
    assert UPLOAD_LIMIT - 1024 * 1024 < len(image) < UPLOAD_LIMIT

    def send(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
        headers = {**headers, "content-type": "image/jpeg", "cache-control": "no-store"}
        return client.post("/predict", content=image, headers=headers)

    direct, routed = both_ways(versions, router, send, "large-upload")
    assert direct.status_code == routed.status_code == 200, routed.text
    # The same image reached the model: the same predictions.
    assert routed.json()["predictions"] == direct.json()["predictions"]
    assert routed.json()["image"] == direct.json()["image"]
    assert routed.headers["x-model-version"] == V1


def test_an_upload_over_the_apps_limit_gets_the_apps_413(
    versions: Versions, router: Router
) -> None:
    image = padded_png(UPLOAD_LIMIT + 1024 * 1024)  # valid, and over the app's limit

    def send(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
        return client.post(
            "/predict", content=image, headers={**headers, "content-type": "image/png"}
        )

    direct, routed = both_ways(versions, router, send, "too-large")
    assert direct.status_code == 413
    assert direct.json()["error"]["code"] == "payload_too_large"
    same_answer(direct, routed)


# Rendered with these, the router's largest body is 4 * ceil(65536 / 3) + 65536 = 152,920 bytes
# (a protocol call of one base64 image and its framing), far below what the apps accept.
SMALL_LIMITS = ("config.SERVING_MAX_UPLOAD_BYTES=65536", "config.SERVING_MAX_BATCH_FILES=1")
LARGEST_BODY = 152_920


def test_a_body_above_the_largest_any_route_accepts_is_the_routers_413(
    router_config: RouterConfig, start_router: StartRouter
) -> None:
    router = start_router(router_config(50, *SMALL_LIMITS))
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        # At the limit it passes: the app judges it (not an image).
        at_limit = client.post("/predict", content=bytes(LARGEST_BODY),
                               headers={"content-type": "image/png"})  # fmt: skip
        assert at_limit.headers.get("x-model-version") in (V1, V2), at_limit.text
        assert at_limit.json()["error"]["code"] != "payload_too_large"
        answer = client.post("/predict", content=bytes(LARGEST_BODY + 1),
                             headers={"X-Request-ID": "big-1"})  # fmt: skip
    assert answer.status_code == 413, answer.text
    assert "x-model-version" not in answer.headers
    body = answer.json()
    assert body["error"]["code"] == "payload_too_large"
    assert str(LARGEST_BODY) in body["error"]["message"]
    assert body["request_id"] == answer.headers["x-request-id"] == "big-1"
    too_large = infer_request(MODEL, bytes(LARGEST_BODY + 1))
    with grpc.insecure_channel(router.grpc_target) as channel:
        error = grpc_error(lambda: infer_call(channel)(too_large, timeout=30))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "router" in error.details()


def oip_images(count: int) -> dict[str, object]:
    data = base64.b64encode(PHOTO).decode()
    return {"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES",
                        "data": [data] * count}]}  # fmt: skip


def deadline_in_decoding(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    """A 49-megapixel PNG (a second to decode here) with 0.3 s to live: the expected wait of an
    idle app is far below it, so it is admitted, and the deadline passes while it is decoded."""
    headers = {**headers, "content-type": "image/png", "X-Request-Timeout": "0.3",
               "cache-control": "no-store"}  # fmt: skip
    return client.post("/predict", content=BIG_PNG, headers=headers)


def expected_wait(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    """A deadline of a microsecond: refused up front, the expected wait being longer."""
    headers = {**headers, "content-type": "image/jpeg", "X-Request-Timeout": "0.000001"}
    return client.post("/predict", content=PHOTO, headers=headers)


def queue_full_oip(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    """13 images in one protocol call, for a queue of 12 (SERVING_MAX_QUEUE_SIZE)."""
    return client.post(f"/v2/models/{MODEL}/infer", json=oip_images(13), headers=headers)


def queue_full_batch(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    files = [("files", (f"{i}.jpg", PHOTO, "image/jpeg")) for i in range(13)]
    return client.post("/predict/batch", files=files, headers=headers)


BIG_PNG = png()


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        (deadline_in_decoding, 504, "deadline_exceeded"),
        (expected_wait, 503, "overloaded"),
        (queue_full_oip, 503, "overloaded"),
        (queue_full_batch, 503, "overloaded"),
    ],
    ids=["deadline_504", "expected_wait_503", "queue_full_protocol_503", "queue_full_batch_503"],
)
def test_the_apps_503_and_504_pass_through_unchanged(
    send: Send, status: int, code: str, versions: Versions, router: Router
) -> None:
    direct, routed = both_ways(versions, router, send, f"refused-{send.__name__}")
    assert direct.status_code == status, direct.text
    body = direct.json()
    assert (body["error"]["code"] if isinstance(body["error"], dict) else body["code"]) == code
    if status == 503:
        assert int(direct.headers["retry-after"]) >= 1
    same_answer(direct, routed)


def test_the_request_id_sent_comes_back_and_one_is_made_when_none_is(router: Router) -> None:
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        predict = {"content-type": "image/jpeg"}
        sent = client.post(
            "/predict", content=PHOTO, headers={**predict, "X-Request-ID": "mine-42"}
        )
        assert sent.status_code == 200, sent.text
        assert sent.headers["x-request-id"] == sent.json()["request_id"] == "mine-42"
        made = [client.post("/predict", content=PHOTO, headers=predict) for _ in range(2)]
        for answer in made:
            assert answer.status_code == 200, answer.text
            assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
            assert answer.json()["request_id"] == answer.headers["x-request-id"]
        assert made[0].headers["x-request-id"] != made[1].headers["x-request-id"]
        # Errors carry it too, the app's and the router's own.
        for headers in ({"X-Model-Version": V1}, {"X-Model-Version": "v9"}):
            headers = {**predict, **headers, "X-Request-ID": "err-7"}
            answer = client.post("/predict", content=b"not an image", headers=headers)
            assert answer.status_code in (400, 415), answer.text
            assert answer.headers["x-request-id"] == answer.json()["request_id"] == "err-7"


@pytest.mark.parametrize("request_id", ['quote"d', "back\\slash", "x" * 200])
def test_an_id_the_app_would_not_take_still_gives_json_errors(
    request_id: str, router: Router
) -> None:
    """The app replaces an id outside letters, digits and `._:-` (at most 128): the router's
    own error bodies must stay JSON whatever the client sent."""
    with httpx.Client(base_url=router.base_url, timeout=60) as client:
        answer = client.get(
            "/health", headers={"X-Model-Version": "v9", "X-Request-ID": request_id}
        )
    assert answer.status_code == 400
    body = json.loads(answer.content)
    assert body["error"]["code"] == "unknown_model_version"
    assert body["request_id"] == answer.headers["x-request-id"]
