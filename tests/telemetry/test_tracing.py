"""Tracing in process: the span tree of each route, checked with the SDK's in-memory exporter
on a real app (resnet18, random weights); the W3C context honoured; the context carried into
the decode threads and across the batcher (one batch span linked to the requests it served);
log lines and metric exemplars that lead to a trace; the dropped-span counter."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

from app.main import create_app
from app.telemetry.logs import JsonFormatter
from app.telemetry.metrics import Metrics
from app.telemetry.tracing import CountingBatchProcessor, CountingExporter, TracingConfig
from conftest import make_settings, wait_ready
from helpers.metrics import samples_of

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
JPEG = {"content-type": "image/jpeg"}
TRACED = {**JPEG, "traceparent": TRACEPARENT}
STAGES = {"cache lookup", "decode", "queue", "inference", "top_k"}


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    app = create_app(make_settings(), on_fatal=lambda exc: None, span_exporter=exporter)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client, exporter


def finished(client: TestClient, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    client.app.state.tracing.force_flush()  # type: ignore[attr-defined]
    return list(exporter.get_finished_spans())


def reset(client: TestClient, exporter: InMemorySpanExporter) -> None:
    """Earlier requests' spans out of the way: flushed from the batch queue, then cleared."""
    finished(client, exporter)
    exporter.clear()


def trace_of(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def server_span(spans: list[ReadableSpan]) -> ReadableSpan:
    [span] = [s for s in spans if s.kind is trace.SpanKind.SERVER]
    return span


def test_predict_is_one_trace_with_every_stage_under_the_callers_parent(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    reset(client, exporter)
    response = client.post("/predict", content=jpeg(1), headers=TRACED)
    assert response.status_code == 200
    spans = trace_of(finished(client, exporter), int(TRACE_ID, 16))
    server = server_span(spans)
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.name == "POST /predict"
    attributes = dict(server.attributes or {})
    assert attributes["http.route"] == "/predict"
    assert attributes["request.id"] == response.headers["x-request-id"]
    names = {s.name for s in spans}
    assert names >= STAGES, names
    decode = next(s for s in spans if s.name == "decode")
    assert dict(decode.attributes or {})["image.format"] == "JPEG"
    assert dict(decode.attributes or {})["image.width"] == 160
    # Every stage hangs under the server span (directly or through the framework's spans).
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    for span in spans:
        if span.name in STAGES:
            parent = span
            while parent.parent is not None and parent.parent.span_id in by_id:
                parent = by_id[parent.parent.span_id]
            assert parent is server, span.name
    # The request's share of the batch links to the batch's own span, in a trace of its own.
    share = next(s for s in spans if s.name == "inference")
    [link] = share.links
    batch = next(
        s
        for s in finished(client, exporter)
        if s.context is not None and s.context.span_id == link.context.span_id
    )
    assert batch.name == "inference batch"
    assert batch.context is not None
    assert batch.context.trace_id != int(TRACE_ID, 16)
    assert any(lk.context.trace_id == int(TRACE_ID, 16) for lk in batch.links)
    assert int(dict(share.attributes or {})["batch.size"]) >= 1  # type: ignore[arg-type]


def test_a_cache_hit_has_no_decode_nor_model_spans(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    image = jpeg(2)
    assert client.post("/predict", content=image, headers=JPEG).status_code == 200
    reset(client, exporter)
    hit = client.post("/predict", content=image, headers=JPEG)
    assert hit.headers["x-cache"] == "hit"
    names = {s.name for s in finished(client, exporter)}
    assert "cache lookup" in names
    assert not names & {"decode", "queue", "inference"}


def test_a_malformed_traceparent_starts_a_new_trace(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    for bad in ("00-zzzz-xx-01", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
                "00-" + "a" * 5000):  # fmt: skip
        reset(client, exporter)
        response = client.post("/predict", content=jpeg(3), headers={**JPEG, "traceparent": bad})
        assert response.status_code == 200
        server = server_span(finished(client, exporter))
        assert server.parent is None
        assert server.context is not None
        assert server.context.trace_id != 0


def test_errors_carry_their_code(traced: tuple[TestClient, InMemorySpanExporter]) -> None:
    client, exporter = traced
    reset(client, exporter)
    response = client.post(
        "/predict", content=b"not an image", headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 400
    server = server_span(finished(client, exporter))
    assert dict(server.attributes or {})["app.error.code"] == "invalid_image"
    assert dict(server.attributes or {})["http.response.status_code"] == 400


def test_batch_and_protocol_routes_are_traced(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    reset(client, exporter)
    files = [("files", (f"{i}.jpg", jpeg(10 + i), "image/jpeg")) for i in range(3)]
    assert client.post("/predict/batch", files=files).status_code == 200
    spans = finished(client, exporter)
    assert server_span(spans).name == "POST /predict/batch"
    assert sum(s.name == "decode" for s in spans) == 3
    reset(client, exporter)
    tensor = np.zeros((1, 3, 224, 224), dtype=np.float32).ravel().tolist()
    body = {"inputs": [{"name": "tensor", "shape": [1, 3, 224, 224], "datatype": "FP32",
                        "data": tensor}]}  # fmt: skip
    assert client.post("/v2/models/resnet18/infer", json=body).status_code == 200
    spans = finished(client, exporter)
    assert server_span(spans).name == "POST /v2/models/{model_name}/infer"
    assert {"queue", "inference"} <= {s.name for s in spans}


def test_the_decode_thread_runs_in_the_requests_context(
    traced: tuple[TestClient, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = traced
    decoder = client.app.state.service.decoder  # type: ignore[attr-defined]
    seen: list[tuple[str, int]] = []
    original = decoder._open_and_decode

    def spy(*args: Any) -> Any:
        seen.append(
            (threading.current_thread().name, trace.get_current_span().get_span_context().trace_id)
        )
        return original(*args)

    monkeypatch.setattr(decoder, "_open_and_decode", spy)
    response = client.post("/predict", content=jpeg(4), headers=TRACED)
    assert response.status_code == 200
    [(thread, trace_id)] = seen
    assert thread.startswith("decode")
    assert trace_id == int(TRACE_ID, 16)


def test_one_batch_serves_several_traces(traced: tuple[TestClient, InMemorySpanExporter]) -> None:
    client, exporter = traced
    reset(client, exporter)

    def one(i: int) -> int:
        headers = {"content-type": "image/jpeg", "cache-control": "no-store"}
        return int(client.post("/predict", content=jpeg(100 + i), headers=headers).status_code)

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(one, range(24))) == {200}
    batches = [s for s in finished(client, exporter) if s.name == "inference batch"]
    assert sum(len(b.links) for b in batches) == 24, "every request linked from its batch"
    assert max(len(b.links) for b in batches) > 1, "some batch served several traces"
    for batch in batches:
        assert dict(batch.attributes or {})["batch.size"] == len(batch.links)


# --- logs and exemplars -------------------------------------------------------------------------


def test_a_log_line_written_in_a_span_names_its_trace() -> None:
    provider = TracerProvider()
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


def test_latency_buckets_carry_the_trace_as_an_exemplar(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, _ = traced
    response = client.post("/predict", content=jpeg(5), headers=TRACED)
    assert response.status_code == 200
    accept = {"accept": "application/openmetrics-text; version=1.0.0"}
    page = client.get("/metrics", headers=accept)
    assert page.headers["content-type"].startswith("application/openmetrics-text")
    lines = [ln for ln in page.text.splitlines() if ln.startswith("request_duration_seconds_bucket")
             and 'route="/predict"' in ln and f'trace_id="{TRACE_ID}"' in ln]  # fmt: skip
    assert lines, "a /predict latency bucket points at the request's trace"
    classic = client.get("/metrics")
    assert classic.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in classic.text
    assert samples_of(classic.text)  # still the format Prometheus' classic scrape reads


# --- dropped spans ------------------------------------------------------------------------------


class Stuck(SpanExporter):
    """A collector that never answers in time: every export blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        # Until released: were a span's end to wait for an export, the test would hang here.
        self.release.wait()
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.release.set()


def test_spans_that_cannot_be_sent_are_counted() -> None:
    metrics = Metrics()
    stuck = Stuck()
    processor = CountingBatchProcessor(
        CountingExporter(stuck, metrics),
        metrics,
        max_queue_size=10,
        max_export_batch_size=5,
        schedule_delay_millis=10,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(100):
        with tracer.start_as_current_span("work"):
            pass
    stuck.release.set()
    processor.shutdown_within(5)
    dropped = samples_of(metrics.render()[0].decode())
    full = dropped['tracing_spans_dropped_total{reason="queue_full"}']
    failed = dropped['tracing_spans_dropped_total{reason="export_failed"}']
    # At most 10 queued and 5 being exported: at least 85 pushed out, the rest failed.
    assert full >= 80
    assert failed >= 1


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_an_unusable_otel_setting_is_refused_by_name(env: dict[str, str], variable: str) -> None:
    from app.telemetry.tracing import TracingConfigError

    with pytest.raises(TracingConfigError, match=variable):
        TracingConfig.from_env(env)


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    assert not TracingConfig.from_env({}).enabled
    assert not TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "none"}).enabled
    config = TracingConfig.from_env(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    )
    assert (config.enabled, config.protocol) == (True, "grpc")


# --- the other routes and refusals ------------------------------------------------------------


def test_a_url_request_traces_its_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    image = jpeg(20)

    class Photo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "image/jpeg")
            self.send_header("content-length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Photo)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    exporter = InMemorySpanExporter()
    settings = make_settings(allow_private_urls=True)
    app = create_app(settings, on_fatal=lambda exc: None, span_exporter=exporter)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            wait_ready(client)
            url = f"http://127.0.0.1:{http.server_address[1]}/cat.jpg"
            response = client.post(
                "/predict", json={"url": url}, headers={"traceparent": TRACEPARENT}
            )
            assert response.status_code == 200, response.text
            spans = trace_of(finished(client, exporter), int(TRACE_ID, 16))
    finally:
        http.shutdown()
    names = {s.name for s in spans}
    assert {"admission", "read body", "fetch image", *STAGES} <= names, names
    fetch = next(s for s in spans if s.name == "fetch image")
    assert fetch.kind is trace.SpanKind.CLIENT


def test_an_admission_refusal_is_a_failed_admission_span(
    traced: tuple[TestClient, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, exporter = traced
    admission = client.app.state.service.admission  # type: ignore[attr-defined]
    monkeypatch.setattr(admission, "max_queue_size", 0)  # every image is one too many
    reset(client, exporter)
    response = client.post("/predict", content=jpeg(21), headers=TRACED)
    assert response.status_code == 503
    spans = trace_of(finished(client, exporter), int(TRACE_ID, 16))
    server = server_span(spans)
    code = response.json()["error"]["code"]
    assert dict(server.attributes or {})["app.error.code"] == code
    [admitted] = [s for s in spans if s.name == "admission"]
    assert admitted.status.status_code is trace.StatusCode.ERROR
    assert not {"decode", "inference"} & {s.name for s in spans}


def test_a_deadline_carries_its_code(traced: tuple[TestClient, InMemorySpanExporter]) -> None:
    client, exporter = traced
    reset(client, exporter)
    response = client.post(
        "/predict", content=jpeg(22), headers={**TRACED, "X-Request-Timeout": "0.000001"}
    )
    assert response.status_code in (503, 504), response.text
    server = server_span(trace_of(finished(client, exporter), int(TRACE_ID, 16)))
    assert dict(server.attributes or {})["app.error.code"] == response.json()["error"]["code"]
    assert dict(server.attributes or {})["http.response.status_code"] == response.status_code
