"""/metrics carries the promised names, with bounded labels, and they move after requests."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from helpers.images import photo_bytes
from helpers.metrics import scrape, value

REQUIRED = {
    "request_count_total": "counter",
    "request_duration_seconds": "histogram",
    "prediction_count_total": "counter",
    "predicted_class_total": "counter",
    "inference_duration_seconds": "histogram",
    "image_decode_duration_seconds": "histogram",
    "requests_in_flight": "gauge",
    "model_info": "gauge",
    "model_ready": "gauge",
    "batch_size": "histogram",
    "queue_wait_seconds": "histogram",
    "queue_depth": "gauge",
}


def test_exact_names_and_types_are_exported(client: TestClient) -> None:
    client.post("/predict", files={"file": ("a.jpg", photo_bytes("grace_hopper"))})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name, kind in REQUIRED.items():
        assert re.search(rf"^# TYPE {name} {kind}$", text, re.M), f"{name} ({kind}) missing"


def test_metrics_move_after_requests(client: TestClient) -> None:
    before = scrape(client)
    # no-store: the model runs every time (a repeat would be a cache hit: no decode, no batch).
    for _ in range(3):
        ok = client.post(
            "/predict",
            files={"file": ("a.jpg", photo_bytes("grace_hopper"))},
            headers={"Cache-Control": "no-store"},
        )
        assert ok.status_code == 200
    bad = client.post("/predict", files={"file": ("a.jpg", b"garbage")})
    assert bad.status_code == 400
    after = scrape(client)

    ok_key = 'request_count_total{method="POST",route="/predict",status="200"}'
    bad_key = 'request_count_total{method="POST",route="/predict",status="400"}'
    assert after[ok_key] - before.get(ok_key, 0) == 3
    assert after[bad_key] - before.get(bad_key, 0) == 1
    assert (
        value(after, 'prediction_count_total{model="resnet18"}')
        - value(before, 'prediction_count_total{model="resnet18"}')
        == 3
    )
    assert value(after, "predicted_class_total{") - value(before, "predicted_class_total{") == 3
    duration = 'request_duration_seconds_count{method="POST",route="/predict"}'
    assert after[duration] - before.get(duration, 0) == 4
    assert value(after, "inference_duration_seconds_count") > value(
        before, "inference_duration_seconds_count"
    )
    assert value(after, "image_decode_duration_seconds_count") > value(
        before, "image_decode_duration_seconds_count"
    )
    errors = 'request_errors_total{code="invalid_image"}'
    assert after[errors] - before.get(errors, 0) == 1


def test_model_info_names_model_weights_backend_device_dtype(client: TestClient) -> None:
    samples = scrape(client)
    info = [k for k in samples if k.startswith("model_info{")]
    assert len(info) == 1
    for fragment in ('model="resnet18"', 'weights="random"', 'weights_source="random"',
                     'backend="openvino"', 'device="cpu"', 'dtype="float32"'):  # fmt: skip
        assert fragment in info[0]
    assert samples["model_ready{}"] == 1.0


def test_unknown_paths_share_one_route_label(client: TestClient) -> None:
    for i in range(5):
        client.get(f"/scan/{i}")
    routes = {k for k in scrape(client) if k.startswith("request_count_total{")}
    assert not any("/scan/" in k for k in routes)
    assert any('route="unmatched"' in k for k in routes)
