"""The protocol over gRPC, served for real on a free port and driven by Triton's own gRPC
client (tritonclient.grpc, from PyPI): health, metadata, inference with BYTES and FP32 batches
and classification, errors as status codes, API keys, deadlines, drain and metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from app.oip.grpc import grpc_predict_v2_pb2 as pb
from app.oip.grpc.interceptors import MetricsObserver
from app.oip.grpc.server import start_grpc_server
from app.oip.tensors import Limits
from app.telemetry.metrics import Metrics
from helpers.oip_fake import LABELS, SIZE, FakeModel, image_file, preprocess
from helpers.oip_servers import SERVER_INFO, GrpcServerThread, LoopThread

LIMITS = Limits(max_images=4, max_image_bytes=64 * 1024)
INFER = "/inference.GRPCInferenceService/ModelInfer"

Start = Callable[..., GrpcServerThread]


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def start(model: FakeModel) -> Iterator[Start]:
    servers: list[GrpcServerThread] = []

    def starter(**options: Any) -> GrpcServerThread:
        options.setdefault("limits", LIMITS)
        server = GrpcServerThread(model, **options)
        servers.append(server)
        return server

    yield starter
    for server in servers:
        server.close()


@pytest.fixture
def client(start: Start) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(start().target) as c:
        yield c


def images_input(images: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def fp32_input(batch: np.ndarray, name: str = "tensor") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    return tensor


def expected(model: FakeModel, images: list[bytes]) -> np.ndarray:
    return model.scores(np.stack([preprocess(i) for i in images]))


def status_of(call: Callable[[], object]) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


# --- health and metadata ----------------------------------------------------------------------


def test_health_and_metadata(client: grpcclient.InferenceServerClient, model: FakeModel) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("fake")
    assert client.is_model_ready("fake", "2")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == SERVER_INFO.name
    assert set(server["extensions"]) >= {"classification", "binary_tensor_data"}
    meta = client.get_model_metadata("fake", as_json=True)
    assert meta["versions"] == ["1", "2"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("image", "BYTES", ["-1"]),
        ("tensor", "FP32", ["-1", "3", str(SIZE), str(SIZE)]),
    ]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("scores", "FP32")]
    model.ready = False
    assert not client.is_server_ready()
    assert not client.is_model_ready("fake")
    assert status_of(lambda: client.is_model_ready("other")) == "StatusCode.NOT_FOUND"


# --- inference --------------------------------------------------------------------------------


def test_bytes_batch_with_class_count(
    client: grpcclient.InferenceServerClient, model: FakeModel
) -> None:
    images = [image_file(i, fmt) for i, fmt in enumerate(["PNG", "JPEG", "WEBP"])]
    result = client.infer(
        "fake",
        [images_input(images)],
        outputs=[grpcclient.InferRequestedOutput("scores", class_count=3)],
        request_id="req-7",
    )
    strings = result.as_numpy("scores")
    assert strings.shape == (3, 3)
    assert result.get_response().id == "req-7"
    for row, scores in zip(strings, expected(model, images), strict=True):
        values, indices, labels = zip(*(s.decode().split(":", 2) for s in row), strict=True)
        top = np.argsort(-scores, kind="stable")[:3]
        assert [int(i) for i in indices] == top.tolist()
        assert list(labels) == [LABELS[i] for i in top]
        assert [float(v) for v in values] == pytest.approx(scores[top].tolist(), abs=1e-6)


def test_fp32_batch_returns_the_scores(
    client: grpcclient.InferenceServerClient, model: FakeModel
) -> None:
    images = [image_file(i) for i in range(4)]
    batch = np.stack([preprocess(i) for i in images])
    result = client.infer("fake", [fp32_input(batch)], model_version="1")
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, model.scores(batch), rtol=1e-6)
    # The same pixels sent as image files score the same.
    from_files = client.infer("fake", [images_input(images)]).as_numpy("scores")
    np.testing.assert_allclose(from_files, scores, rtol=1e-6)


@pytest.mark.parametrize(
    ("build", "status"),
    [
        (lambda c: c.infer("other", [images_input([image_file(0)])]), "NOT_FOUND"),
        (lambda c: c.infer("fake", [images_input([image_file(0)])], "9"), "NOT_FOUND"),
        (lambda c: c.infer("fake", [images_input([b"not an image"])]), "INVALID_ARGUMENT"),
        (lambda c: c.infer("fake", [images_input([b""])]), "INVALID_ARGUMENT"),
        (
            lambda c: c.infer("fake", [images_input([image_file(i) for i in range(5)])]),
            "INVALID_ARGUMENT",
        ),
        (
            lambda c: c.infer("fake", [fp32_input(np.zeros((1, 3, 8, 8), np.float32))]),
            "INVALID_ARGUMENT",
        ),
        (lambda c: c.infer("fake", [_fp64_input()]), "INVALID_ARGUMENT"),
        (
            lambda c: c.infer(
                "fake",
                [fp32_input(np.zeros((1, 3, SIZE, SIZE), np.float32), "image")],
            ),
            "INVALID_ARGUMENT",
        ),
        (
            lambda c: c.infer(
                "fake",
                [images_input([image_file(0)])],
                outputs=[grpcclient.InferRequestedOutput("probabilities")],
            ),
            "INVALID_ARGUMENT",
        ),
    ],
)
def test_bad_requests_get_status_codes(
    client: grpcclient.InferenceServerClient, build: Callable[[Any], object], status: str
) -> None:
    assert status_of(lambda: build(client)) == f"StatusCode.{status}"


def _fp64_input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("tensor", [1, 3, SIZE, SIZE], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 3, SIZE, SIZE)))
    return tensor


def test_refusals_are_unavailable_with_retry_after(start: Start, model: FakeModel) -> None:
    server = start()
    request = pb.ModelInferRequest(model_name="fake")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x04\x00\x00\x00abcd")
    with grpc.insecure_channel(server.target) as channel:
        infer = channel.unary_unary(
            INFER,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        for flag, code, retry in (("ready", "not_ready", "5"), ("overloaded", "overloaded", "1")):
            model.ready, model.overloaded = flag != "ready", flag == "overloaded"
            with pytest.raises(grpc.RpcError) as caught:
                infer(request, metadata=(("x-request-id", "rid-1"),))
            error: Any = caught.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            trailing = dict(error.trailing_metadata())
            assert trailing["retry-after"] == retry
            assert trailing["error-code"] == code
            assert trailing["x-request-id"] == "rid-1"


# --- the model's version -------------------------------------------------------------------------

SERVICE = "/inference.GRPCInferenceService"
RPCS: dict[str, tuple[Any, Any]] = {
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
}


def raw_call(channel: grpc.Channel, rpc: str) -> Any:
    request_type, response_type = RPCS[rpc]
    return channel.unary_unary(
        f"{SERVICE}/{rpc}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )


def infer_request(version: str) -> Any:
    request = pb.ModelInferRequest(model_name="fake", model_version=version)
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    data = image_file(0)
    request.raw_input_contents.append(len(data).to_bytes(4, "little") + data)
    return request


def test_every_answer_names_the_version_in_its_initial_metadata(start: Start) -> None:
    """The latest version served (the fake serves "1" and "2"), on successes and errors."""
    server = start(api_keys=[b"s3cret-key"])
    key = (("x-api-key", "s3cret-key"),)
    with grpc.insecure_channel(server.target) as channel:
        answer, call = raw_call(channel, "ModelInfer").with_call(infer_request(""), metadata=key)
        assert answer.model_version == "2"
        assert ("x-model-version", "2") in tuple(call.initial_metadata())
        _, call = raw_call(channel, "ServerLive").with_call(pb.ServerLiveRequest())
        assert ("x-model-version", "2") in tuple(call.initial_metadata())
        for metadata in ((), key):  # UNAUTHENTICATED, then NOT_FOUND
            with pytest.raises(grpc.RpcError) as caught:
                raw_call(channel, "ModelInfer")(infer_request("7"), metadata=metadata)
            error: Any = caught.value
            assert error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND)
            assert ("x-model-version", "2") in tuple(error.initial_metadata())


def test_a_version_that_is_not_served_is_not_found(start: Start) -> None:
    server = start()
    requests = {
        "ModelInfer": infer_request("3"),
        "ModelMetadata": pb.ModelMetadataRequest(name="fake", version="3"),
        "ModelReady": pb.ModelReadyRequest(name="fake", version="3"),
    }
    with grpc.insecure_channel(server.target) as channel:
        for rpc, request in requests.items():
            with pytest.raises(grpc.RpcError) as caught:
                raw_call(channel, rpc)(request)
            error: Any = caught.value
            assert error.code() == grpc.StatusCode.NOT_FOUND, rpc
            assert "'3'" in error.details(), error.details()  # the version asked for
            assert "'2'" in error.details(), error.details()  # the one served
            assert dict(error.trailing_metadata())["error-code"] == "model_not_found"
        # A version served, named or not, answers.
        assert raw_call(channel, "ModelInfer")(infer_request("1")).model_version == "1"
        assert raw_call(channel, "ModelInfer")(infer_request("")).model_version == "2"
        meta = raw_call(channel, "ModelMetadata")(pb.ModelMetadataRequest(name="fake", version="1"))
        assert list(meta.versions) == ["1", "2"]


# --- API keys ---------------------------------------------------------------------------------


def test_api_keys_from_metadata(start: Start) -> None:
    server = start(api_keys=[b"s3cret", b"other"])
    inputs = [images_input([image_file(0)])]
    with grpcclient.InferenceServerClient(server.target) as client:
        # Health needs no key, as the HTTP probes need none.
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("fake")
        unauthenticated = "StatusCode.UNAUTHENTICATED"
        assert status_of(lambda: client.infer("fake", inputs)) == unauthenticated
        assert status_of(lambda: client.get_model_metadata("fake")) == unauthenticated
        assert status_of(lambda: client.get_server_metadata()) == unauthenticated
        wrong = {"authorization": "Bearer s3cre"}
        assert status_of(lambda: client.infer("fake", inputs, headers=wrong)) == unauthenticated
        for headers in ({"authorization": "Bearer s3cret"}, {"x-api-key": "other"}):
            assert client.infer("fake", inputs, headers=headers).as_numpy("scores").shape == (
                1,
                10,
            )


# --- deadlines --------------------------------------------------------------------------------

# How far over the client's own timeout the server may see it (see the first use).
GRPC_TIMEOUT_ROUNDING_S = 0.25


def test_client_deadline_reaches_the_model(start: Start, model: FakeModel) -> None:
    server = start(default_timeout_s=600.0, max_timeout_s=50.0)
    inputs = [images_input([image_file(0)])]
    with grpcclient.InferenceServerClient(server.target) as client:
        client.infer("fake", inputs, client_timeout=3.0)
        # gRPC carries the timeout in a header rounded up to its unit, and the server measures
        # it from when the call arrived: the remaining time can come out a few ms over what the
        # client asked (3.0089 s was seen in CI). The point is 3 s, not the server's 50 or 600.
        assert model.deadlines[-1] <= 3.0 + GRPC_TIMEOUT_ROUNDING_S
        client.infer("fake", inputs, client_timeout=500.0)
        assert model.deadlines[-1] <= 50.0  # capped by the server's maximum
        client.infer("fake", inputs)
        assert 50.0 < model.deadlines[-1] <= 600.0  # no client deadline: the server's default
        client.infer("fake", inputs, timeout=2_000_000)  # Triton's timeout parameter, in us
        assert model.deadlines[-1] <= 2.0


def test_deadline_exceeded(start: Start, model: FakeModel) -> None:
    metrics = Metrics()
    server = start(max_timeout_s=0.2, observer=MetricsObserver(metrics))
    model.delay_s = 30.0
    inputs = [images_input([image_file(0)])]
    with grpcclient.InferenceServerClient(server.target) as client:
        # The client's own deadline.
        assert status_of(lambda: client.infer("fake", inputs, client_timeout=0.2)) == (
            "StatusCode.DEADLINE_EXCEEDED"
        )
        # The server's maximum, with a client that would wait far longer.
        assert status_of(lambda: client.infer("fake", inputs, client_timeout=60)) == (
            "StatusCode.DEADLINE_EXCEEDED"
        )
    count = metrics.sample_value(
        "request_count_total", {"method": "GRPC", "route": INFER, "status": "504"}
    )
    assert count is not None
    assert count >= 1


# --- drain --------------------------------------------------------------------------------------


def test_stop_lets_calls_in_flight_finish_and_refuses_new_ones(
    start: Start, model: FakeModel
) -> None:
    server = start()
    model.gate = threading.Event()
    images = [image_file(0)]
    outcome: dict[str, Any] = {}

    def in_flight() -> None:
        with grpcclient.InferenceServerClient(server.target) as c:
            try:
                outcome["scores"] = c.infer("fake", [images_input(images)]).as_numpy("scores")
            except InferenceServerException as exc:
                outcome["error"] = exc

    caller = threading.Thread(target=in_flight)
    caller.start()
    try:
        _wait_for(lambda: model.in_flight == 1)
        stopped = server.stop_later(grace=60.0)
        _wait_for(lambda: server.server.draining)
        with grpcclient.InferenceServerClient(server.target) as c:
            assert status_of(lambda: c.infer("fake", [images_input(images)])) == (
                "StatusCode.UNAVAILABLE"
            )
            assert c.is_server_live()
            assert not c.is_server_ready()
        assert not stopped.done()  # still draining: the held call is in flight
    finally:
        model.gate.set()
        caller.join(timeout=30)
    stopped.result(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    np.testing.assert_allclose(outcome["scores"], expected(model, images), rtol=1e-6)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


# --- metrics, raw bytes, message size ------------------------------------------------------------


def test_metrics_count_calls_by_route_and_status(start: Start) -> None:
    metrics = Metrics()
    server = start(observer=MetricsObserver(metrics))
    with grpcclient.InferenceServerClient(server.target) as client:
        client.infer("fake", [images_input([image_file(0)])])
        status_of(lambda: client.infer("fake", [images_input([b"junk"])]))
        client.is_server_live()

    def count(route: str, status: str) -> float | None:
        labels = {"method": "GRPC", "route": route, "status": status}
        return metrics.sample_value("request_count_total", labels)

    assert count(INFER, "200") == 1
    assert count(INFER, "400") == 1
    assert count("/inference.GRPCInferenceService/ServerLive", "200") == 1
    errors = metrics.sample_value("request_errors_total", {"code": "invalid_image"})
    assert errors == 1
    assert metrics.sample_value("requests_in_flight") == 0
    duration = metrics.sample_value(
        "request_duration_seconds_count", {"method": "GRPC", "route": INFER}
    )
    assert duration == 2


def test_bytes_that_are_no_message_are_invalid_argument(start: Start) -> None:
    server = start()
    with grpc.insecure_channel(server.target) as channel:
        raw = channel.unary_unary(INFER)
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff\x0f")
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_messages_beyond_the_upload_limit_are_refused(start: Start) -> None:
    server = start(limits=Limits(max_images=2, max_image_bytes=1000))
    too_big = [b"\x00" * 1_500_000]
    with grpcclient.InferenceServerClient(server.target) as client:
        assert status_of(lambda: client.infer("fake", [images_input(too_big)])) == (
            "StatusCode.RESOURCE_EXHAUSTED"
        )
        # Within the message limit but over the per-image limit: the protocol's own check.
        assert status_of(lambda: client.infer("fake", [images_input([b"\x00" * 1001])])) == (
            "StatusCode.INVALID_ARGUMENT"
        )


def test_listens_on_an_unbracketed_ipv6_host(model: FakeModel) -> None:
    """uvicorn takes `::` for every address; the gRPC server accepts the same setting."""
    loop = LoopThread()
    try:
        server = loop.run(
            start_grpc_server(
                lambda: model,
                port=0,
                host="::",
                api_keys=[],
                limits=LIMITS,
                server_info=SERVER_INFO,
                default_timeout_s=10.0,
                max_timeout_s=10.0,
            )
        )
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            assert client.is_server_live()
        loop.run(server.stop(None))
    finally:
        loop.close()
