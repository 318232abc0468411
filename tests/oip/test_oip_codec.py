"""The Open Inference Protocol codec: requests as real clients build them (tritonclient's and
KServe's request builders, not ours) decode to the right images and tensors; malformed ones
fail with 400/413 and a message naming the problem; responses parse in tritonclient."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from app.errors import ServingError
from app.oip.grpc import grpc_predict_v2_pb2 as pb
from app.oip.grpc.codec import decode_request as decode_grpc
from app.oip.grpc.codec import encode_response as encode_grpc
from app.oip.handler import InferenceRequest, InferenceResult, infer
from app.oip.rest.codec import decode_request, encode_response
from app.oip.tensors import Limits, classification_strings
from app.oip.tensors import RequestedOutput as Wanted
from helpers.oip_fake import LABELS, SIZE, FakeModel, image_file, preprocess

LIMITS = Limits(max_images=4, max_image_bytes=4096)
MODEL = FakeModel()


def rest(body: bytes, header: int | str | None = None) -> Any:
    request, binary = decode_request(
        body,
        None if header is None else str(header),
        model=MODEL,
        model_name="fake",
        model_version="",
        limits=LIMITS,
    )
    return request, binary


def triton_body(inputs: list[Any], outputs: list[Any] | None = None) -> tuple[bytes, int | None]:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs)
    return body, json_size


def images_input(images: list[bytes], binary: bool = True) -> Any:
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    return tensor


def fp32_input(batch: np.ndarray, binary: bool = True) -> Any:
    tensor = httpclient.InferInput("tensor", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def pixels(n: int) -> np.ndarray:
    return np.stack([preprocess(image_file(i)) for i in range(n)])


# --- REST requests built by tritonclient.http and kserve ---------------------------------------


def test_tritonclient_binary_bytes_batch_decodes_to_the_same_files() -> None:
    images = [image_file(i) for i in range(3)]
    body, size = triton_body([images_input(images)], [httpclient.InferRequestedOutput("scores")])
    assert size is not None
    request, binary = rest(body, size)
    assert request.images == images
    assert request.tensor is None
    assert [(o.name, o.classification, o.binary) for o in request.outputs] == [("scores", 0, True)]
    assert binary is False


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_fp32_decodes_json_and_binary(binary: bool) -> None:
    batch = pixels(2)
    outputs = [httpclient.InferRequestedOutput("scores", binary_data=False, class_count=3)]
    body, size = triton_body([fp32_input(batch, binary)], outputs)
    assert (size is not None) == binary
    request, _ = rest(body, size)
    assert request.images is None
    np.testing.assert_array_equal(request.tensor, batch)
    assert request.outputs[0].classification == 3
    assert request.outputs[0].binary is False


def test_tritonclient_without_outputs_asks_for_binary_outputs() -> None:
    body, size = triton_body([images_input([image_file(0)])])
    request, binary = rest(body, size)
    assert binary is True
    assert [o.name for o in request.outputs] == ["scores"]


def test_json_images_are_base64_and_may_be_nested() -> None:
    images = [image_file(0), image_file(1)]
    document = {
        "id": "abc",
        "parameters": {"timeout": 2_500_000},
        "inputs": [
            {
                "name": "image",
                "shape": [2, 1],
                "datatype": "BYTES",
                "data": [[base64.b64encode(i).decode()] for i in images],
            }
        ],
    }
    request, _ = rest(json.dumps(document).encode())
    assert request.images == images
    assert request.id == "abc"
    assert request.timeout_s == pytest.approx(2.5)


# --- malformed REST requests ----------------------------------------------------------------


def _doc(**tensor: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "tensor", "shape": [1, 3, SIZE, SIZE], "datatype": "FP32"}
    base.update(tensor)
    return {"inputs": [base]}


ZEROS = [0.0] * (3 * SIZE * SIZE)
B64 = base64.b64encode(image_file(0)).decode()


@pytest.mark.parametrize(
    ("document", "status", "fragment"),
    [
        (_doc(datatype="FP16", data=ZEROS), 400, "datatype FP32"),
        (_doc(name="image", shape=[1], datatype="BYTES", data=[1.0]), 400, "base64"),
        (_doc(name="image", shape=[1], datatype="FP32", data=[B64]), 400, "datatype BYTES"),
        (_doc(name="pixels", data=ZEROS), 400, "unknown input 'pixels'"),
        (_doc(shape=[1, 3, 8, 8], data=ZEROS), 400, f"[N, 3, {SIZE}, {SIZE}]"),
        (_doc(data=ZEROS[:-1]), 400, "were sent"),
        (_doc(shape=[0, 3, SIZE, SIZE], data=[]), 400, "empty"),
        (_doc(shape=[5, 3, SIZE, SIZE], data=ZEROS * 5), 413, "at most 4"),
        (_doc(shape=[1, 3, SIZE, -1], data=ZEROS), 400, "non-negative"),
        (_doc(data=["0.5"] * len(ZEROS)), 400, "numbers only"),
        (_doc(data=[float("nan"), *ZEROS[1:]]), 400, "NaN"),
        (_doc(data=[[0.0, 1.0], [2.0]]), 400, "list of numbers"),
        (_doc(name="image", shape=[1], datatype="BYTES", data=["not base64!"]), 400, "base64"),
        (_doc(name="image", shape=[2], datatype="BYTES", data=[B64]), 400, "were sent"),
        (_doc(parameters={"binary_data_size": 4}), 400, "header"),
        (_doc(), 400, "no `data`"),
        ({"inputs": []}, 400, "exactly one"),
        ({"inputs": [_doc()["inputs"][0]] * 2}, 400, "exactly one"),
        ({**_doc(data=ZEROS), "outputs": [{"name": "probs"}]}, 400, "unknown output 'probs'"),
        ({**_doc(data=ZEROS), "outputs": [{"name": "scores"}] * 2}, 400, "twice"),
        (
            {
                **_doc(data=ZEROS),
                "outputs": [{"name": "scores", "parameters": {"classification": -1}}],
            },
            400,
            "classification",
        ),
        (
            {
                **_doc(data=ZEROS),
                "outputs": [{"name": "scores", "parameters": {"classification": True}}],
            },
            400,
            "classification",
        ),
        ({**_doc(data=ZEROS), "parameters": {"binary_data_output": "yes"}}, 400, "true or false"),
        ({**_doc(data=ZEROS), "id": 7}, 400, "`id`"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_malformed_json_requests(document: Any, status: int, fragment: str) -> None:
    with pytest.raises(ServingError) as caught:
        rest(json.dumps(document).encode())
    assert caught.value.status_code == status
    assert fragment in caught.value.message


def test_too_large_image_is_413() -> None:
    big = b"x" * (LIMITS.max_image_bytes + 1)
    body, size = triton_body([images_input([big])])
    with pytest.raises(ServingError) as caught:
        rest(body, size)
    assert caught.value.status_code == 413
    assert "SERVING_MAX_UPLOAD_BYTES" in caught.value.message


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda body, size: (body + b"extra", size), "follow the JSON header"),
        (lambda body, size: (body[:-3], size), "follow the JSON header"),
        (lambda body, size: (body, size + 10_000_000), "Inference-Header-Content-Length"),
        (lambda body, size: (body, "12abc"), "Inference-Header-Content-Length"),
        (lambda body, size: (body, 0), "Inference-Header-Content-Length"),
        (lambda body, size: (body, size - 1), "not valid JSON"),
    ],
)
def test_binary_sizes_that_do_not_add_up(mutate: Any, fragment: str) -> None:
    body, size = triton_body([images_input([image_file(0), image_file(1)])])
    with pytest.raises(ServingError) as caught:
        rest(*mutate(body, size))
    assert caught.value.status_code == 400
    assert fragment in caught.value.message


def _raw_images_doc(raw: bytes, count: int) -> tuple[bytes, int]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [count],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return head + raw, len(head)


@pytest.mark.parametrize(
    ("raw", "count", "fragment"),
    [
        (b"\x05\x00", 1, "truncated length prefix"),
        (b"\x05\x00\x00\x00abc", 1, "declares 5 bytes"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b", 1, "follow its 1 elements"),
        (b"\x01\x00\x00\x00a", 2, "were sent"),
    ],
)
def test_raw_bytes_elements_must_parse_exactly(raw: bytes, count: int, fragment: str) -> None:
    with pytest.raises(ServingError) as caught:
        rest(*_raw_images_doc(raw, count))
    assert caught.value.status_code == 400
    assert fragment in caught.value.message


def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ServingError) as caught:
        rest(body)
    assert caught.value.status_code == 400


# --- classification and responses -----------------------------------------------------------


def test_classification_strings_sorted_with_six_decimals() -> None:
    scores = np.array([[0.1, 0.5, 0.25, 0.5], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32)
    labels = ["a", "b", "c", "d"]
    assert classification_strings(scores, 3, labels) == (
        b"0.500000:1:b",
        b"0.500000:3:d",
        b"0.250000:2:c",
        b"0.700000:0:a",
        b"0.100000:1:b",
        b"0.100000:2:c",
    )


async def _result(outputs: list[Wanted], n: int = 2) -> tuple[InferenceResult, np.ndarray]:
    images = [image_file(i) for i in range(n)]
    request = InferenceRequest("fake", "", "r1", outputs, images=images)
    result = await infer(MODEL, request, deadline=float("inf"))
    expected = MODEL.scores(np.stack([preprocess(i) for i in images]))
    return result, expected


@pytest.mark.anyio
@pytest.mark.parametrize("binary", [True, False])
async def test_rest_response_parses_in_tritonclient(binary: bool) -> None:
    outputs = [Wanted("scores", 0, binary)]
    result, expected = await _result(outputs)
    body, headers = encode_response(result, outputs, binary_default=False)
    header_length = headers.get("Inference-Header-Content-Length")
    assert (header_length is not None) == binary
    parsed = httpclient.InferenceServerClient.parse_response_body(
        body, header_length=None if header_length is None else int(header_length)
    )
    np.testing.assert_allclose(parsed.as_numpy("scores"), expected, rtol=1e-6)
    assert parsed.get_response()["id"] == "r1"


@pytest.mark.anyio
async def test_rest_classification_response_in_tritonclient() -> None:
    outputs = [Wanted("scores", 3, None)]
    result, expected = await _result(outputs)
    body, headers = encode_response(result, outputs, binary_default=True)
    parsed = httpclient.InferenceServerClient.parse_response_body(
        body, header_length=int(headers["Inference-Header-Content-Length"])
    )
    strings = parsed.as_numpy("scores")
    assert strings.shape == (2, 3)
    for row, scores in zip(strings, expected, strict=True):
        top = np.argsort(-scores)[:3]
        assert [s.decode().split(":")[1] for s in row] == [str(i) for i in top]
        assert row[0].decode() == f"{scores[top[0]]:f}:{top[0]}:{LABELS[top[0]]}"


@pytest.mark.anyio
async def test_grpc_response_parses_in_tritonclient() -> None:
    outputs = [Wanted("scores")]
    result, expected = await _result(outputs, n=3)
    wire = encode_grpc(result).SerializeToString()
    parsed = grpcclient.InferResult(grpcclient.service_pb2.ModelInferResponse.FromString(wire))
    np.testing.assert_allclose(parsed.as_numpy("scores"), expected, rtol=1e-6)
    assert parsed.get_response().id == "r1"


# --- gRPC requests built by tritonclient.grpc ---------------------------------------------------


def test_tritonclient_grpc_request_decodes() -> None:
    images = [image_file(0), image_file(1)]
    tensor = grpcclient.InferInput("image", [2, 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(2, 1))
    output = grpcclient.InferRequestedOutput("scores", class_count=5)
    message = grpcclient._utils._get_inference_request(
        "fake", [tensor], "2", "id-1", [output], 0, False, False, 0, 1_000_000, None
    )
    mine = pb.ModelInferRequest.FromString(message.SerializeToString())
    request = decode_grpc(mine, MODEL, LIMITS)
    assert request.images == images
    assert (request.model_name, request.model_version, request.id) == ("fake", "2", "id-1")
    assert request.outputs[0].classification == 5
    assert request.timeout_s == pytest.approx(1.0)


def test_grpc_contents_fields_are_checked() -> None:
    message = pb.ModelInferRequest(model_name="fake")
    tensor = message.inputs.add(name="tensor", datatype="FP32", shape=[1, 3, SIZE, SIZE])
    tensor.contents.int_contents.extend([0] * (3 * SIZE * SIZE))
    with pytest.raises(ServingError, match=r"contents\.fp32_contents, not contents\.int_contents"):
        decode_grpc(message, MODEL, LIMITS)
    tensor.contents.ClearField("int_contents")
    tensor.contents.fp32_contents.extend(ZEROS)
    assert decode_grpc(message, MODEL, LIMITS).tensor is not None
    message.raw_input_contents.append(b"\x00" * 4)
    with pytest.raises(ServingError, match="`contents` while raw_input_contents"):
        decode_grpc(message, MODEL, LIMITS)
