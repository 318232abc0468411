"""The HTTP API in process: every endpoint's success path and every error code from real bad
input. Errors are always JSON with a stable code, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers.images import encode, photo, photo_bytes, png_with_header_size, truncated

JPEG = photo_bytes("grace_hopper")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def assert_prediction(body: dict[str, Any], top_k: int = 5) -> None:
    predictions = body["predictions"]
    assert len(predictions) == top_k
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(isinstance(p["label"], str) and p["label"] for p in predictions)
    assert all(0 <= p["class_id"] < 1000 for p in predictions)
    assert body["model"] == "resnet18"
    assert body["weights"] == "random"
    timing = body["timing_ms"]
    if body["cache"] == "hit":  # the session's app has seen this image: no decode, no model
        assert timing["skipped"] == ["decode", "queue", "inference"]
        assert timing["decode"] is timing["queue"] is timing["inference"] is None
        assert timing["batch_size"] == 0
        assert timing["total"] >= timing["cache"] >= 0
        return
    assert body["cache"] == "miss"
    assert timing["skipped"] == []
    for key in ("decode", "queue", "inference", "total"):
        assert timing[key] >= 0
    assert timing["total"] >= timing["inference"]


# --- success paths -------------------------------------------------------------------------


def test_predict_multipart_file(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("hopper.jpg", JPEG, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_prediction(body)
    assert body["image"] == {"format": "JPEG", "width": 512, "height": 600}
    assert body["request_id"] == response.headers["x-request-id"]


def test_predict_raw_body(client: TestClient) -> None:
    response = client.post("/predict", content=JPEG, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert_prediction(response.json())


def test_predict_same_image_same_answer_whatever_the_transport(client: TestClient) -> None:
    a = client.post("/predict", files={"file": ("x.jpg", JPEG, "image/jpeg")}).json()
    b = client.post("/predict", content=JPEG, headers={"content-type": "image/jpeg"}).json()
    assert [p["class_id"] for p in a["predictions"]] == [p["class_id"] for p in b["predictions"]]
    for pa, pb in zip(a["predictions"], b["predictions"], strict=True):
        assert pa["score"] == pytest.approx(pb["score"], abs=1e-5)


@pytest.mark.parametrize("top_k", [1, 3, 20])
def test_top_k_query(client: TestClient, top_k: int) -> None:
    response = client.post(f"/predict?top_k={top_k}", files={"file": ("x.jpg", JPEG, "image/jpeg")})
    assert response.status_code == 200
    assert_prediction(response.json(), top_k=top_k)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_predict_accepts_every_supported_format(client: TestClient, fmt: str) -> None:
    data = encode(photo("chelsea"), fmt)
    response = client.post("/predict", files={"file": (f"c.{fmt.lower()}", data, "image/x-any")})
    assert response.status_code == 200, response.text
    assert response.json()["image"]["format"] == fmt


def test_incoming_request_id_is_honoured(client: TestClient) -> None:
    response = client.post(
        "/predict",
        files={"file": ("x.jpg", JPEG, "image/jpeg")},
        headers={"X-Request-ID": "trace-abc.123"},
    )
    assert response.headers["x-request-id"] == "trace-abc.123"
    assert response.json()["request_id"] == "trace-abc.123"


def test_unsafe_request_id_is_replaced(client: TestClient) -> None:
    unsafe = 'evil id with spaces and "quotes"' + "x" * 200
    response = client.get("/health", headers={"X-Request-ID": unsafe})
    assert response.headers["x-request-id"] != unsafe
    assert len(response.headers["x-request-id"]) == 32


def test_batch_keeps_order_and_isolates_failures(client: TestClient) -> None:
    chelsea = encode(photo("chelsea"), "PNG")
    files = [
        ("files", ("a.jpg", JPEG, "image/jpeg")),
        ("files", ("bad.jpg", b"not an image at all", "image/jpeg")),
        ("files", ("c.png", chelsea, "image/png")),
    ]
    response = client.post("/predict/batch?top_k=2", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert [r["filename"] for r in body["results"]] == ["a.jpg", "bad.jpg", "c.png"]
    assert body["succeeded"] == 2
    assert body["failed"] == 1
    assert body["results"][1]["error"]["code"] == "invalid_image"
    assert body["results"][1]["predictions"] is None
    single_a = client.post("/predict?top_k=2", files={"file": ("a.jpg", JPEG, "image/jpeg")})
    single_c = client.post("/predict?top_k=2", files={"file": ("c.png", chelsea, "image/png")})
    for batch_item, single in ((body["results"][0], single_a), (body["results"][2], single_c)):
        ids = [p["class_id"] for p in batch_item["predictions"]]
        assert ids == [p["class_id"] for p in single.json()["predictions"]]


def test_batch_file_count_is_bounded(client: TestClient, fast_settings: Any) -> None:
    limit = fast_settings.max_batch_files
    files = [("files", (f"{i}.jpg", JPEG, "image/jpeg")) for i in range(limit + 1)]
    assert_error(client.post("/predict/batch", files=files), 413, "too_many_files")


def test_batch_needs_files(client: TestClient) -> None:
    response = client.post("/predict/batch", data={"other": "x"}, files={"x": ("a", b"b")})
    assert_error(response, 400, "invalid_request")


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_reports_random_weights(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["random_weights"] is True
    assert body["weights_source"] == "random"
    assert body["model"] == "resnet18"


def test_model_info_and_labels(client: TestClient) -> None:
    info = client.get("/model").json()
    assert info["model"] == "resnet18"
    assert info["num_classes"] == 1000
    assert info["input_size"] == 224
    assert info["random_weights"] is True
    assert info["backend"] == "openvino"  # the default on a CPU
    labels = client.get("/model/labels").json()["labels"]
    assert len(labels) == 1000
    assert labels[281] == "tabby"


def test_openapi_documents_every_endpoint_and_error(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/predict", "/predict/batch", "/health", "/ready", "/metrics", "/model"):
        assert path in paths
    predict = paths["/predict"]["post"]
    assert {"multipart/form-data", "application/json", "image/jpeg"} <= set(
        predict["requestBody"]["content"]
    )
    assert {"200", "400", "413", "415", "422", "502", "503", "504"} <= set(predict["responses"])
    assert "examples" in json.dumps(spec["components"]["schemas"]["PredictResponse"])
    assert client.get("/docs").status_code == 200


# --- errors from real bad input ------------------------------------------------------------


def test_truncated_jpeg_is_400(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("t.jpg", truncated(JPEG), "image/jpeg")})
    assert_error(response, 400, "invalid_image")


def test_zero_bytes_is_400(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert_error(response, 400, "empty_image")


def test_text_file_named_jpg_is_400(client: TestClient) -> None:
    text = b"just some text, honestly\n" * 40
    response = client.post("/predict", files={"file": ("notes.jpg", text, "image/jpeg")})
    assert_error(response, 400, "invalid_image")


def test_decompression_bomb_header_is_413(client: TestClient) -> None:
    bomb = png_with_header_size(100_000, 100_000)
    response = client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert_error(response, 413, "image_too_large")


def test_upload_over_byte_limit_is_413(client: TestClient, fast_settings: Any) -> None:
    big = b"\xff\xd8" + b"\0" * (fast_settings.max_upload_bytes + 10)
    response = client.post("/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert_error(response, 413, "payload_too_large")


def test_raw_body_over_limit_is_refused_before_reading(
    client: TestClient, fast_settings: Any
) -> None:
    big = b"\0" * (fast_settings.max_upload_bytes + 128 * 1024)
    response = client.post("/predict", content=big, headers={"content-type": "image/jpeg"})
    assert_error(response, 413, "payload_too_large")


def test_unsupported_image_format_is_415(client: TestClient) -> None:
    ico = encode(Image.new("RGB", (32, 32)), "ICO")
    response = client.post("/predict", files={"file": ("x.ico", ico, "image/x-icon")})
    assert_error(response, 415, "unsupported_image_format")


def test_non_image_part_type_is_415(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("doc.pdf", b"%PDF-1.4", "application/pdf")})
    assert_error(response, 415, "unsupported_media_type")


def test_unsupported_body_type_is_415(client: TestClient) -> None:
    response = client.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("top_k", ["0", "21", "abc", "-1"])
def test_bad_top_k_is_422(client: TestClient, top_k: str) -> None:
    response = client.post(f"/predict?top_k={top_k}", files={"file": ("x.jpg", JPEG, "image/jpeg")})
    assert_error(response, 422, "invalid_parameter")


def test_json_without_url_is_422(client: TestClient) -> None:
    assert_error(client.post("/predict", json={"uri": "http://x"}), 422, "invalid_parameter")


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request")


def test_multipart_without_file_or_url_is_400(client: TestClient) -> None:
    response = client.post("/predict", data={"something": "else"}, files={"x": ("a", b"b")})
    assert_error(response, 400, "invalid_request")


def test_file_and_url_together_is_400(client: TestClient) -> None:
    response = client.post(
        "/predict",
        data={"url": "https://example.com/a.jpg"},
        files={"file": ("x.jpg", JPEG, "image/jpeg")},
    )
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/cat.jpg", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("not a url", "invalid_url"),
        ("http://user:pw@example.com/a.jpg", "invalid_url"),
        ("http://127.0.0.1/cat.jpg", "url_not_allowed"),
        ("http://localhost:8000/health", "url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", "url_not_allowed"),
        ("http://[::1]/a.jpg", "url_not_allowed"),
        ("http://10.1.2.3/a.jpg", "url_not_allowed"),
        ("http://[::ffff:127.0.0.1]/a.jpg", "url_not_allowed"),
    ],
)
def test_bad_and_private_urls_are_400(client: TestClient, url: str, code: str) -> None:
    assert_error(client.post("/predict", json={"url": url}), 400, code)


def test_url_as_multipart_field_is_checked_too(client: TestClient) -> None:
    response = client.post(
        "/predict", data={"url": "http://127.0.0.1:1/x.jpg"}, files={"x": ("a", b"b")}
    )
    assert_error(response, 400, "url_not_allowed")


def test_unknown_route_is_json_404(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")


def test_wrong_method_is_json_405(client: TestClient) -> None:
    assert_error(client.get("/predict"), 405, "method_not_allowed")
