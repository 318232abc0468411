"""SERVING_MODEL_VERSION in every answer: `model_version` in the JSON of /predict,
/predict/batch and /model, and the `X-Model-Version` header on every HTTP response of the app,
successes, errors and probes alike (a router splitting traffic between two versions, or a
client, sees which one answered). In process, with a label other than the default."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from conftest import FAST_MODEL, make_settings, wait_ready
from helpers.images import photo_bytes

VERSION = "canary-7.2_b"
KEY = "model-version-test-key-01"
AUTH = {"X-API-Key": KEY}
JPEG = photo_bytes("chelsea")


@pytest.fixture(scope="module")
def versioned() -> Iterator[TestClient]:
    settings = make_settings(
        model_version=VERSION, api_keys=KEY, max_upload_bytes=256 * 1024, max_batch_files=2
    )
    app = create_app(settings, on_fatal=lambda exc: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def assert_versioned(response: httpx.Response) -> None:
    assert response.headers.get_list("x-model-version") == [VERSION], (
        response.status_code,
        response.headers,
    )


# --- the JSON fields ------------------------------------------------------------------------------


def test_predict_says_which_version_answered(versioned: TestClient) -> None:
    for _ in range(2):  # a miss, then a cache hit
        response = versioned.post("/predict", files={"file": ("a.jpg", JPEG)}, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == VERSION
        assert body["model"] == FAST_MODEL
        assert_versioned(response)
    assert body["cache"] == "hit"


def test_predict_batch_says_which_version_answered(versioned: TestClient) -> None:
    files = [("files", ("a.jpg", JPEG)), ("files", ("b.jpg", b"not an image"))]
    response = versioned.post("/predict/batch", files=files, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == VERSION
    assert (body["succeeded"], body["failed"]) == (1, 1)
    assert_versioned(response)


def test_model_says_which_version_it_serves_and_no_shadow(versioned: TestClient) -> None:
    response = versioned.get("/model", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["model_version"] == VERSION
    assert response.json()["shadow"] is None
    assert_versioned(response)


def test_the_openapi_document_declares_the_field(versioned: TestClient) -> None:
    schemas = versioned.get("/openapi.json").json()["components"]["schemas"]
    for name in ("PredictResponse", "BatchResponse", "ModelInfoResponse"):
        assert schemas[name]["properties"]["model_version"]["type"] == "string", name
        assert "model_version" in schemas[name]["required"], name


# --- the header on every response -----------------------------------------------------------------


def big_body() -> bytes:
    return b"\xff\xd8" + b"\0" * (4 * 1024 * 1024)  # over the cap, whatever its overhead


ERRORS: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "/predict", {"files": {"file": ("a.jpg", b"garbage")}, "headers": AUTH}, 400),
    ("POST", "/predict", {"files": {"file": ("a.jpg", JPEG)}}, 401),
    ("GET", "/model", {}, 401),
    ("GET", "/no/such/path", {}, 404),
    ("DELETE", "/predict", {"headers": AUTH}, 405),
    ("POST", "/predict", {"content": big_body(), "headers": {**AUTH,
                                                              "content-type": "image/jpeg"}}, 413),
    ("POST", "/predict", {"content": b"x", "headers": {**AUTH, "content-type": "text/csv"}}, 415),
    ("POST", "/predict?top_k=99", {"files": {"file": ("a.jpg", JPEG)}, "headers": AUTH}, 422),
    ("POST", "/predict", {"files": {"file": ("a.jpg", JPEG)},
                          "headers": {**AUTH, "X-Request-Timeout": "soon"}}, 422),
    ("POST", "/predict/batch", {"files": [("files", ("a.jpg", JPEG))] * 3, "headers": AUTH}, 413),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), ERRORS)
def test_errors_carry_the_header_and_the_request_id(
    versioned: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = versioned.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert_versioned(response)


def test_a_500_from_the_last_resort_handler_carries_it(
    versioned: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    pipeline = versioned.app.state.service.pipeline  # type: ignore[attr-defined]
    monkeypatch.setattr(pipeline, "classify_bytes", broken)
    response = versioned.post("/predict", files={"file": ("a.jpg", JPEG)}, headers=AUTH)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert_versioned(response)


@pytest.mark.parametrize(
    "path", ["/health", "/ready", "/metrics", "/openapi.json", "/docs", "/v2/health/live",
             "/v2/health/ready"],
)  # fmt: skip
def test_probes_and_documents_carry_the_header(versioned: TestClient, path: str) -> None:
    response = versioned.get(path)
    assert response.status_code == 200
    assert_versioned(response)


def test_the_request_id_is_still_echoed_beside_it(versioned: TestClient) -> None:
    response = versioned.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers.get_list("x-request-id") == ["abc-123"]
    assert_versioned(response)


# --- the Open Inference Protocol's REST routes: the version in the path ------------------------

INFER_BODY = {
    "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                "data": [base64.b64encode(JPEG).decode()]}],
    "outputs": [{"name": "scores", "parameters": {"classification": 1}}],
}  # fmt: skip


def test_protocol_metadata_lists_the_version(versioned: TestClient) -> None:
    for path in (f"/v2/models/{FAST_MODEL}", f"/v2/models/{FAST_MODEL}/versions/{VERSION}"):
        response = versioned.get(path, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["versions"] == [VERSION]
        assert_versioned(response)


@pytest.mark.parametrize("suffix", ["", f"/versions/{VERSION}"])
def test_protocol_ready_and_infer_for_this_version(versioned: TestClient, suffix: str) -> None:
    base = f"/v2/models/{FAST_MODEL}{suffix}"
    ready = versioned.get(f"{base}/ready")
    assert ready.status_code == 200
    assert ready.json() == {"name": FAST_MODEL, "ready": True}
    response = versioned.post(f"{base}/infer", json=INFER_BODY, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == VERSION
    assert response.json()["model_name"] == FAST_MODEL
    assert_versioned(response)


@pytest.mark.parametrize(
    ("method", "tail", "body"),
    [("GET", "", None), ("GET", "/ready", None), ("POST", "/infer", INFER_BODY)],
    ids=["metadata", "ready", "infer"],
)
@pytest.mark.parametrize("other", ["v1", "1", "canary-7.2"])
def test_another_version_is_not_found_in_the_protocols_shape(
    versioned: TestClient, method: str, tail: str, body: Any, other: str
) -> None:
    path = f"/v2/models/{FAST_MODEL}/versions/{other}{tail}"
    response = versioned.request(method, path, json=body, headers=AUTH)
    assert response.status_code == 404, response.text
    error = response.json()
    assert error["code"] == "model_not_found"
    assert repr(other) in error["error"]  # the version asked for ...
    assert repr(VERSION) in error["error"]  # ... and the one served
    assert_versioned(response)


# --- the protocol's model name (SERVING_OIP_MODEL_NAME) -----------------------------------------


def test_the_protocol_serves_the_model_under_the_name_it_is_given() -> None:
    """An A/B canary of another architecture answers under the stable's name (the chart sets
    it), so that a client naming the model reaches either version; the answers still say which
    architecture classified the image."""
    settings = make_settings(oip_model_name="resnet50")
    app = create_app(settings, on_fatal=lambda exc: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        metadata = client.get("/v2/models/resnet50")
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()["name"] == "resnet50"
        assert client.get(f"/v2/models/{FAST_MODEL}").status_code == 404
        predicted = client.post("/predict", files={"file": ("a.jpg", JPEG)})
        assert predicted.json()["model"] == FAST_MODEL


@pytest.mark.parametrize("name", ["a/b", "-x", "x" * 65, "na me"])
def test_a_protocol_model_name_that_is_no_path_segment_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"model name"):
        make_settings(oip_model_name=name)
