"""The protocol's REST API: the router on a small FastAPI app (with the app's own error handlers
installed, which the protocol routes must not use), served by a real uvicorn, driven by
Triton's HTTP client and KServe's REST client (both from PyPI), plain HTTP for the JSON corners,
and Schemathesis against the routes' OpenAPI document."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
import tritonclient.http as httpclient
from fastapi import Depends, FastAPI, Request
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance
from tritonclient.utils import InferenceServerException

from app.api.errors import install_error_handlers
from app.errors import UnauthorizedError
from app.oip.rest.routes import oip_router
from app.oip.tensors import Limits
from helpers.oip_fake import LABELS, SIZE, FakeModel, image_file, preprocess
from helpers.oip_servers import SERVER_INFO, UvicornThread

LIMITS = Limits(max_images=4, max_image_bytes=64 * 1024)
KEY = "k-123"
ROOT = Path(__file__).resolve().parents[2]


def make_app(model: FakeModel) -> FastAPI:
    async def api_key(request: Request) -> None:
        # Stands in for the app's key check: raises the same error the app's check raises.
        if request.headers.get("x-api-key", KEY) != KEY:
            raise UnauthorizedError("the API key is not valid")

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(
        oip_router(
            lambda request: model,
            get_deadline=lambda request: time.monotonic() + 30.0,
            limits=LIMITS,
            server=SERVER_INFO,
            protected=[Depends(api_key)],
        )
    )
    return app


@pytest.fixture(scope="module")
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture(scope="module")
def server(model: FakeModel) -> Iterator[UvicornThread]:
    thread = UvicornThread(make_app(model))
    yield thread
    thread.close()


@pytest.fixture(autouse=True)
def fresh_model(model: FakeModel) -> None:
    model.ready, model.overloaded, model.delay_s = True, False, 0.0


@pytest.fixture
def triton(server: UvicornThread) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def images_input(images: list[bytes], binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    return tensor


def fp32_input(batch: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("tensor", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def expected(model: FakeModel, images: list[bytes]) -> np.ndarray:
    return model.scores(np.stack([preprocess(i) for i in images]))


# --- tritonclient.http ------------------------------------------------------------------------


def test_health_and_metadata(triton: httpclient.InferenceServerClient, model: FakeModel) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("fake")
    assert triton.is_model_ready("fake", "1")
    assert not triton.is_model_ready("other")
    meta = triton.get_server_metadata()
    assert meta["name"] == SERVER_INFO.name
    assert {"classification", "binary_tensor_data"} <= set(meta["extensions"])
    model_meta = triton.get_model_metadata("fake")
    assert [(t["name"], t["datatype"], t["shape"]) for t in model_meta["inputs"]] == [
        ("image", "BYTES", [-1]),
        ("tensor", "FP32", [-1, 3, SIZE, SIZE]),
    ]
    assert model_meta["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, len(LABELS)]}
    ]
    model.ready = False
    assert not triton.is_server_ready()
    assert not triton.is_model_ready("fake")


def test_bytes_batch_with_class_count(
    triton: httpclient.InferenceServerClient, model: FakeModel
) -> None:
    images = [image_file(i, fmt) for i, fmt in enumerate(["PNG", "JPEG", "WEBP"])]
    result = triton.infer(
        "fake",
        [images_input(images)],
        outputs=[httpclient.InferRequestedOutput("scores", class_count=2)],
        request_id="r-1",
    )
    strings = result.as_numpy("scores")
    assert strings.shape == (3, 2)
    assert result.get_response()["id"] == "r-1"
    for row, scores in zip(strings, expected(model, images), strict=True):
        top = np.argsort(-scores, kind="stable")[:2]
        assert [s.decode() for s in row] == [f"{scores[i]:f}:{i}:{LABELS[i]}" for i in top]


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (False, True)])
def test_fp32_json_and_binary(
    triton: httpclient.InferenceServerClient,
    model: FakeModel,
    binary_in: bool,
    binary_out: bool,
) -> None:
    images = [image_file(i) for i in range(2)]
    batch = np.stack([preprocess(i) for i in images])
    result = triton.infer(
        "fake",
        [fp32_input(batch, binary_in)],
        model_version="2",
        outputs=[httpclient.InferRequestedOutput("scores", binary_data=binary_out)],
    )
    response = result.get_response()
    assert response["model_version"] == "2"
    assert ("data" in response["outputs"][0]) is not binary_out
    np.testing.assert_allclose(result.as_numpy("scores"), model.scores(batch), rtol=1e-6)
    np.testing.assert_allclose(
        result.as_numpy("scores"), expected(model, images), rtol=1e-6
    )  # the same pixels as image files score the same


@pytest.mark.parametrize(
    ("call", "status", "fragment"),
    [
        (lambda t: t.infer("other", [images_input([image_file(0)])]), "404", "unknown model"),
        (lambda t: t.infer("fake", [images_input([image_file(0)])], "9"), "404", "version"),
        (lambda t: t.infer("fake", [images_input([b"junk"])]), "400", "not an image"),
        (
            lambda t: t.infer("fake", [images_input([image_file(i) for i in range(5)])]),
            "413",
            "at most 4",
        ),
        (
            lambda t: t.infer("fake", [fp32_input(np.zeros((1, 3, 4, 4), np.float32), True)]),
            "400",
            f"[N, 3, {SIZE}, {SIZE}]",
        ),
        (
            lambda t: t.infer(
                "fake",
                [images_input([image_file(0)])],
                outputs=[httpclient.InferRequestedOutput("logits")],
            ),
            "400",
            "unknown output",
        ),
        (lambda t: t.get_model_metadata("other"), "404", "unknown model"),
        (
            lambda t: t.infer("fake", [images_input([image_file(0)])], headers={"x-api-key": "no"}),
            "401",
            "API key",
        ),
    ],
)
def test_errors_reach_tritonclient_as_protocol_errors(
    triton: httpclient.InferenceServerClient, call: Any, status: str, fragment: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call(triton)
    assert caught.value.status() == status
    assert fragment in str(caught.value.message())


# --- plain HTTP: the JSON corners ---------------------------------------------------------------


def test_json_base64_images_and_json_outputs(server: UvicornThread, model: FakeModel) -> None:
    images = [image_file(0), image_file(1)]
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": [2, 1],
                "datatype": "BYTES",
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ],
        "outputs": [{"name": "scores", "parameters": {"classification": 1}}],
    }
    response = httpx.post(f"{server.url}/v2/models/fake/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    output = response.json()["outputs"][0]
    top = expected(model, images).argmax(axis=1)
    assert output["shape"] == [2, 1]
    assert [s.split(":")[1] for s in output["data"]] == [str(i) for i in top]


def test_refusals_are_503_with_retry_after(server: UvicornThread, model: FakeModel) -> None:
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}]}
    model.overloaded = True
    response = httpx.post(f"{server.url}/v2/models/fake/infer", json=body, timeout=30)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": "too many requests queued", "code": "overloaded"}
    model.ready = False
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    ready = httpx.get(f"{server.url}/v2/models/fake/versions/1/ready")
    assert (ready.status_code, ready.json()) == (503, {"name": "fake", "ready": False})


@pytest.mark.parametrize(
    ("content", "headers", "status", "fragment"),
    [
        (b"{not json", {}, 400, "not valid JSON"),
        (b"[]", {}, 400, "JSON object"),
        (b'{"inputs": []}', {"Content-Encoding": "gzip"}, 415, "Content-Encoding"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "x"}, 400, "Inference-Header"),
        (b'{"inputs": []}', {"x-api-key": "wrong"}, 401, "API key"),
    ],
)
def test_malformed_bodies_are_protocol_errors(
    server: UvicornThread, content: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/fake/infer", content=content, headers=headers, timeout=30
    )
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "code"}
    assert fragment in body["error"]


# --- KServe's SDK ------------------------------------------------------------------------------


@pytest.mark.slow
def test_kserve_rest_client(server: UvicornThread, model: FakeModel, tmp_path: Path) -> None:
    images = [image_file(0), image_file(1, "JPEG")]
    paths = []
    for index, data in enumerate(images):
        path = tmp_path / f"image{index}"
        path.write_bytes(data)
        paths.append(str(path))
    pixels = np.stack([preprocess(i) for i in images])
    np.save(tmp_path / "pixels.npy", pixels)
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/helpers/kserve_client.py"),
            server.url,
            str(tmp_path / "pixels.npy"),
            *paths,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert (seen["live"], seen["ready"], seen["model_ready"], seen["other_ready"]) == (
        True,
        True,
        True,
        False,
    )
    scores = expected(model, images)
    classes = seen["classes"]
    assert (classes["shape"], classes["datatype"]) == ([2, 2], "BYTES")
    tops = [int(s.split(":")[1]) for s in classes["data"][::2]]
    assert tops == scores.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array(seen["scores"]), scores, rtol=1e-6)
    assert seen["model_name"] == "fake"
    assert seen["error"]["type"] == "HTTPStatusError"
    assert "404" in seen["error"]["text"]
    assert "unknown model" in seen["error"]["text"]


# --- OpenAPI -----------------------------------------------------------------------------------


def test_openapi_documents_every_route(model: FakeModel) -> None:
    document = make_app(model).openapi()
    paths = document["paths"]
    for suffix in ("", "/versions/{model_version}"):
        base = f"/v2/models/{{model_name}}{suffix}"
        assert set(paths[base]) == {"get"}
        assert set(paths[f"{base}/ready"]) == {"get"}
        infer = paths[f"{base}/infer"]["post"]
        content = infer["requestBody"]["content"]
        assert set(content) == {"application/json", "application/octet-stream"}
        inputs = content["application/json"]["schema"]["properties"]["inputs"]
        assert "name" in inputs["items"]["properties"]
        assert {"200", "400", "404", "413", "503"} <= set(infer["responses"])
        headers = {p["name"] for p in infer["parameters"] if p["in"] == "header"}
        assert headers == {"Inference-Header-Content-Length"}
    assert {"/v2", "/v2/health/live", "/v2/health/ready"} <= set(paths)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_fault(server: UvicornThread, mode: GenerationMode) -> None:
    """Every route, valid and invalid requests: no 5xx, and every answer matches the document
    (status codes, content types, response schemas). `positive_data_acceptance` is left out:
    a schema-valid body (random binary, inputs of any shape) is rarely a valid request, and
    refusing it is correct."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()

        @given(operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: Any) -> None:
            case.call_and_validate(
                base_url=server.url, timeout=30, excluded_checks=[positive_data_acceptance]
            )

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
