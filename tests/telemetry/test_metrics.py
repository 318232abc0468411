"""/metrics carries the promised names, with bounded labels, and they move after requests."""

from __future__ import annotations

import base64
import re

from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from app.telemetry.metrics import TOP1_SCORE_BUCKETS, Metrics
from conftest import FAST_MODEL
from helpers.images import photo_bytes
from helpers.metrics import scrape, value, versions_of

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
    "prediction_top1_score": "histogram",
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


# --- the model_version label -------------------------------------------------------------------


def test_every_sample_carries_the_model_version_in_the_text_format(client: TestClient) -> None:
    client.post("/predict", files={"file": ("a.jpg", photo_bytes("grace_hopper"))})
    text = client.get("/metrics").text
    assert versions_of(text) == {"v1"}  # SERVING_MODEL_VERSION's default
    assert '\nmodel_ready{model_version="v1"} 1.0\n' in text
    assert scrape(client, model_version="v1")  # the helper's own check, with the value


def test_every_sample_carries_the_model_version_in_openmetrics(client: TestClient) -> None:
    client.post("/predict", files={"file": ("a.jpg", photo_bytes("grace_hopper"))})
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = openmetrics_families(response.text)  # type: ignore[no-untyped-call]
    samples = [s for f in families for s in f.samples]
    assert samples
    assert {s.labels.get("model_version") for s in samples} == {"v1"}
    assert any(s.name == "request_duration_seconds_bucket" for s in samples)


def test_the_label_is_added_once_for_every_family_and_every_filter() -> None:
    metrics = Metrics(model_version="b-2")
    metrics.request_count.labels(method="GET", route="/health", status="200").inc()
    assert (
        metrics.sample_value(
            "request_count_total", {"method": "GET", "route": "/health", "status": "200"}
        )
        == 1.0
    )
    families = list(metrics.registry.collect())
    assert {s.labels["model_version"] for f in families for s in f.samples} == {"b-2"}
    # prometheus_client's own server (SERVING_METRICS_PORT) filters with ?name[]=...
    only = generate_latest(metrics.registry.restricted_registry(["request_count_total"]))
    assert b'model_version="b-2"' in only
    assert b"process_cpu_seconds_total" not in only
    # The label is not declared by any metric: no call site passes it.
    assert all("model_version" not in (m._labelnames or ()) for m in (
        metrics.request_count, metrics.prediction_count, metrics.top1_score))  # fmt: skip


# --- prediction_top1_score ---------------------------------------------------------------------


def top1_histogram(client: TestClient) -> tuple[float, float, dict[str, float]]:
    samples = scrape(client)
    buckets = {
        k.split('le="', 1)[1].rstrip('"}'): v
        for k, v in samples.items()
        if k.startswith("prediction_top1_score_bucket{")
    }
    return samples["prediction_top1_score_count{}"], samples["prediction_top1_score_sum{}"], buckets


def test_top1_score_is_observed_once_per_image_answered(client: TestClient) -> None:
    before_count, before_sum, _ = top1_histogram(client)
    jpeg = photo_bytes("coffee")
    for _ in range(2):  # a miss, then a cache hit: both answered, both observed
        assert client.post("/predict", files={"file": ("a.jpg", jpeg)}).status_code == 200
    files = [("files", ("a.jpg", jpeg)), ("files", ("b.jpg", photo_bytes("chelsea"))),
             ("files", ("c.jpg", b"not an image"))]  # fmt: skip
    batch = client.post("/predict/batch", files=files)
    assert batch.json()["succeeded"] == 2
    image = base64.b64encode(jpeg).decode()
    body = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [image] * 2}]}
    assert client.post(f"/v2/models/{FAST_MODEL}/infer", json=body).status_code == 200
    assert client.post("/predict", files={"file": ("a.jpg", b"garbage")}).status_code == 400
    count, total, buckets = top1_histogram(client)
    assert count - before_count == 2 + 2 + 2  # the failed images are not answered
    assert 0.0 < total - before_sum <= 6.0  # probabilities
    assert [float(le) for le in buckets if le != "+Inf"] == list(TOP1_SCORE_BUCKETS)
    assert buckets["1.0"] == buckets["+Inf"] == count  # no probability exceeds 1
