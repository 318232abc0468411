"""The Open Inference Protocol on the real app: a `python -m app` process (resnet18, random
weights, API keys on, SERVING_MODEL_VERSION set), driven by clients this project did not write
(tritonclient over HTTP and gRPC). The protocol layer's own tests (tests/oip/test_oip_rest.py,
test_oip_grpc.py) use a numpy model; here the answers come from the real pipeline and must agree
with /predict's."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from app.oip.grpc import grpc_predict_v2_pb2 as pb
from harness.process import ManagedProcess, app_process, free_port
from helpers.images import photo_bytes

MODEL = "resnet18"
KEY = "oip-test-key-0123456789"
VERSION = "2024.06-b"
PHOTOS = ("grace_hopper", "chelsea", "coffee")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, int]]:
    grpc_port = free_port()
    env = {
        "SERVING_MODEL_NAME": MODEL,
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_NUM_THREADS": "2",
        "SERVING_API_KEYS": KEY,
        "SERVING_GRPC_PORT": str(grpc_port),
        "SERVING_MODEL_VERSION": VERSION,
    }
    log = tmp_path_factory.mktemp("oip-app") / "server.log"
    with app_process(env, log_path=log) as server:
        server.wait_ready()
        yield server, grpc_port


@pytest.fixture(scope="module")
def predicted(app: tuple[ManagedProcess, int]) -> dict[str, tuple[int, float]]:
    """/predict's top-1 (class id, score) for each photograph."""
    server, _ = app
    top1 = {}
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=60) as c:
        for name in PHOTOS:
            response = c.post(
                "/predict", content=photo_bytes(name), headers={"content-type": "image/jpeg"}
            )
            assert response.status_code == 200, response.text
            best = response.json()["predictions"][0]
            top1[name] = (best["class_id"], best["score"])
    return top1


def http_client(app: tuple[ManagedProcess, int]) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(app[0].base_url.removeprefix("http://"))


def grpc_client(app: tuple[ManagedProcess, int]) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{app[1]}")


def images(module: object, names: tuple[str, ...]) -> object:
    tensor = module.InferInput("image", [len(names)], "BYTES")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(np.array([photo_bytes(n) for n in names], dtype=np.object_))
    return tensor


def parse(entry: bytes) -> tuple[float, int, str]:
    score, index, label = entry.decode().split(":", 2)
    return float(score), int(index), label


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_top1_through_the_protocol_equals_predicts(
    app: tuple[ManagedProcess, int], predicted: dict[str, tuple[int, float]], transport: str
) -> None:
    auth = {"x-api-key": KEY}
    if transport == "http":
        client: object = http_client(app)
        module: object = httpclient
    else:
        client, module = grpc_client(app), grpcclient
    assert client.is_server_live()  # type: ignore[attr-defined]
    assert client.is_model_ready(MODEL)  # type: ignore[attr-defined]
    output = module.InferRequestedOutput("scores", class_count=5)  # type: ignore[attr-defined]
    result = client.infer(  # type: ignore[attr-defined]
        MODEL, [images(module, PHOTOS)], outputs=[output], headers=dict(auth)
    )
    rows = result.as_numpy("scores")
    assert rows.shape == (len(PHOTOS), 5)
    for name, row in zip(PHOTOS, rows, strict=True):
        entries = [parse(e) for e in row]
        scores = [s for s, _, _ in entries]
        assert scores == sorted(scores, reverse=True)
        class_id, score = predicted[name]
        assert entries[0][1] == class_id, name
        assert entries[0][0] == pytest.approx(score, abs=1e-5)


def test_fp32_tensor_json_binary_and_grpc_agree(app: tuple[ManagedProcess, int]) -> None:
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((2, 3, 224, 224), dtype=np.float32)
    auth = {"x-api-key": KEY}
    seen = []
    for binary in (False, True):
        tensor = httpclient.InferInput("tensor", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        wanted = httpclient.InferRequestedOutput("scores", binary_data=binary)
        # A copy: tritonclient.http adds its binary header (an int) to the dict it is given.
        result = http_client(app).infer(MODEL, [tensor], outputs=[wanted], headers=dict(auth))
        seen.append(result.as_numpy("scores"))
    tensor = grpcclient.InferInput("tensor", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    seen.append(grpc_client(app).infer(MODEL, [tensor], headers=auth).as_numpy("scores"))
    for scores in seen:
        assert scores.shape == (2, 1000)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-4)
        np.testing.assert_allclose(scores, seen[0], atol=1e-5)


def test_errors_as_the_protocol_says(app: tuple[ManagedProcess, int]) -> None:
    auth = {"x-api-key": KEY}
    server, _ = app
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=60) as c:
        assert c.get("/v2/models/resnet999").status_code == 404
        assert "error" in c.get("/v2/models/resnet999").json()
        garbage = base64.b64encode(b"not an image at all").decode()  # JSON carries base64
        undecodable = {
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [garbage]}]
        }
        response = c.post(f"/v2/models/{MODEL}/infer", json=undecodable)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_image"  # beside the protocol's "error"
        assert isinstance(response.json()["error"], str)
        wrong = {"inputs": [{"name": "tensor", "shape": [1, 3], "datatype": "FP32",
                             "data": [0.0, 1.0, 2.0]}]}  # fmt: skip
        assert c.post(f"/v2/models/{MODEL}/infer", json=wrong).status_code == 400
        no_key = httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", json=wrong)
        assert no_key.status_code == 401
    with pytest.raises(InferenceServerException) as refused:
        grpc_client(app).infer(MODEL, [images(grpcclient, ("chelsea",))])
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client(app).get_model_metadata("resnet999", headers=auth)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"


def test_the_version_served_is_the_setting_over_both_transports(
    app: tuple[ManagedProcess, int],
) -> None:
    auth = {"x-api-key": KEY}
    for client in (http_client(app), grpc_client(app)):
        meta = client.get_model_metadata(MODEL, headers=auth)
        versions = meta["versions"] if isinstance(meta, dict) else list(meta.versions)
        assert versions == [VERSION]
        assert client.is_model_ready(MODEL, VERSION)
        module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
        result = client.infer(
            MODEL, [images(module, ("chelsea",))], model_version=VERSION, headers=dict(auth)
        )
        response = result.get_response()
        answered = (
            response["model_version"] if isinstance(response, dict) else (response.model_version)
        )
        assert answered == VERSION
        with pytest.raises(InferenceServerException) as other:
            client.infer(
                MODEL, [images(module, ("chelsea",))], model_version="v1", headers=dict(auth)
            )
        assert str(other.value.status()) in ("404", "StatusCode.NOT_FOUND")
        assert VERSION in str(other.value.message())


def test_grpc_answers_carry_x_model_version(app: tuple[ManagedProcess, int]) -> None:
    """The initial metadata of every call, errors included: a router test sees which version
    answered without parsing the message."""
    with grpc.insecure_channel(f"127.0.0.1:{app[1]}") as channel:
        metadata = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        answer, call = metadata.with_call(
            pb.ModelMetadataRequest(name=MODEL), metadata=(("x-api-key", KEY),)
        )
        assert list(answer.versions) == [VERSION]
        assert ("x-model-version", VERSION) in tuple(call.initial_metadata())
        for request, key in (
            (pb.ModelMetadataRequest(name=MODEL, version="v1"), (("x-api-key", KEY),)),
            (pb.ModelMetadataRequest(name=MODEL), ()),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                metadata(request, metadata=key)
            error: Any = caught.value
            assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED)
            assert ("x-model-version", VERSION) in tuple(error.initial_metadata())


def test_http_answers_carry_x_model_version(app: tuple[ManagedProcess, int]) -> None:
    server, _ = app
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        for path in ("/health", "/v2/health/ready", f"/v2/models/{MODEL}/infer", "/nowhere"):
            response = c.get(path) if "infer" not in path else c.post(path, json={})
            assert response.headers["x-model-version"] == VERSION, path


def test_protocol_calls_are_counted_by_route(app: tuple[ManagedProcess, int]) -> None:
    server, _ = app
    http_client(app).get_server_metadata(headers={"x-api-key": KEY})
    grpc_client(app).is_server_ready()
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    assert 'route="/v2"' in metrics
    assert 'route="/inference.GRPCInferenceService/ServerReady"' in metrics


def test_the_grpc_port_closes_with_the_server(tmp_path: Path) -> None:
    """SIGTERM: the process exits 0 and the gRPC port is free again (nothing left bound)."""
    grpc_port = free_port()
    env = {"SERVING_MODEL_NAME": MODEL, "SERVING_MODEL_WEIGHTS": "random",
           "SERVING_GRPC_PORT": str(grpc_port)}  # fmt: skip
    with app_process(env, log_path=tmp_path / "log") as server:
        server.wait_ready()
        assert grpc_client((server, grpc_port)).is_server_ready()
        assert server.terminate(timeout_s=60) == 0
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    with pytest.raises(InferenceServerException):
        client.is_server_live(client_timeout=2)
