"""Tracing out of a real `python -m app`: spans exported over OTLP/HTTP to a real receiver on
loopback (it decodes the protocol's protobuf, as a collector does), for HTTP and for the
protocol over gRPC, under the caller's traceparent; and a collector that is down costs no
request anything: every answer is 200, and the spans that could not go are counted."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from app.oip.grpc import grpc_predict_v2_pb2 as pb
from harness.otlp_receiver import Receiver
from harness.process import free_port
from helpers.metrics import samples_of
from helpers.process import ManagedProcess, app_process, run_app

pytestmark = pytest.mark.slow

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
BASE_ENV = {
    "SERVING_MODEL_NAME": "resnet18",
    "SERVING_MODEL_WEIGHTS": "random",
    "SERVING_NUM_THREADS": "1",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_SERVICE_NAME": "resnet-serving-test",
    "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=test-pod",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
}


def jpeg() -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A real OTLP/HTTP receiver on loopback (harness/otlp_receiver.py: it decodes the
    protocol's protobuf, as a collector does), keeping every span it gets."""
    with Receiver(keep=True) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def server(
    receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    grpc_port = free_port()
    env = {**BASE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
           "SERVING_GRPC_PORT": str(grpc_port)}  # fmt: skip
    with app_process(env, log_path=tmp_path_factory.mktemp("traced") / "log") as proc:
        proc.wait_ready()
        proc.grpc_port = grpc_port  # type: ignore[attr-defined]
        yield proc


def wait_for(condition: object, timeout_s: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_http_spans_reach_a_real_receiver_under_the_callers_trace(
    server: ManagedProcess, receiver: Receiver
) -> None:
    headers = {"content-type": "image/jpeg", "traceparent": TRACEPARENT}
    response = httpx.post(f"{server.base_url}/predict", content=jpeg(), headers=headers, timeout=30)
    assert response.status_code == 200
    wanted = {"POST /predict", "cache lookup", "decode", "queue", "inference", "top_k"}
    assert wait_for(lambda: wanted <= receiver.names(TRACE_ID)), receiver.names(TRACE_ID)
    with receiver.lock:
        resource = next(s.resource for s in receiver.spans if s.trace_id == TRACE_ID)
    assert resource["service.name"] == "resnet-serving-test"
    assert resource["k8s.pod.name"] == "test-pod"
    # The request's access-log line carries its trace.
    lines = [json.loads(line) for line in server.log_text().splitlines() if TRACE_ID in line]
    assert any(line.get("trace_id") == TRACE_ID and line.get("span_id") for line in lines)


def test_a_grpc_protocol_call_is_traced_the_same_way(
    server: ManagedProcess, receiver: Receiver
) -> None:
    trace_id = "1af7651916cd43dd8448eb211c80319d"
    request = pb.ModelInferRequest(model_name="resnet18")
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(jpeg() + b"\x00")  # a new image: not a cache hit
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:  # type: ignore[attr-defined]
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        call(request, metadata=[("traceparent", f"00-{trace_id}-b7ad6b7169203331-01")], timeout=30)
    wanted = {"/inference.GRPCInferenceService/ModelInfer", "decode", "inference"}
    assert wait_for(lambda: wanted <= receiver.names(trace_id)), receiver.names(trace_id)


def test_a_collector_that_is_down_fails_no_request(tmp_path: Path) -> None:
    env = {**BASE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_BSP_MAX_QUEUE_SIZE": "16",
           "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8"}  # fmt: skip
    with app_process(env, log_path=tmp_path / "log") as proc:
        proc.wait_ready()
        for i in range(30):
            response = httpx.post(f"{proc.base_url}/predict", content=jpeg() + bytes([i]),
                                  headers={"content-type": "image/jpeg"}, timeout=30)  # fmt: skip
            assert response.status_code == 200

        def dropped() -> float:
            page = samples_of(httpx.get(f"{proc.base_url}/metrics").text)
            return sum(v for k, v in page.items() if k.startswith("tracing_spans_dropped_total"))

        assert wait_for(lambda: dropped() > 0, 30), "the spans that could not go are counted"
        assert proc.terminate() == 0, "and it still stops cleanly"


def test_an_unknown_exporter_stops_start_up_naming_the_variable() -> None:
    completed = run_app({"SERVING_MODEL_NAME": "resnet18", "SERVING_MODEL_WEIGHTS": "random",
                         "OTEL_TRACES_EXPORTER": "zipkin"})  # fmt: skip
    assert completed.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in completed.stderr
