"""The requests bench/oip_compare.py replays, built once, and the readers of their answers.

One encoded image per request, top `class_count` classes asked for (Triton's classification
extension), in the three forms a client of the Open Inference Protocol sends:

- REST with Triton's binary tensor data extension: the body tritonclient.http makes itself
  (`generate_request_body`), with its `Inference-Header-Content-Length` header;
- REST in plain JSON: the image base64-encoded as the BYTES element (JSON strings cannot hold
  binary data), the answer in JSON too;
- gRPC: a serialized ModelInferRequest with the image in `raw_input_contents` (a 4-byte
  little-endian length, then the bytes), as tritonclient.grpc sends it.

The readers use the clients' own parsers (tritonclient), so the check that every form gets the
same top-1 does not rest on this project's code.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from app.oip.grpc import grpc_predict_v2_pb2 as pb

IMAGE = "image"
SCORES = "scores"
INFERENCE_HEADER = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class HttpBody:
    body: bytes
    headers: dict[str, str]


def binary_body(image: bytes, class_count: int) -> HttpBody:
    """What tritonclient.http's `infer` sends: its own body, its header, no content type."""
    tensor = httpclient.InferInput(IMAGE, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
    output = httpclient.InferRequestedOutput(SCORES, class_count=class_count)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=[output]
    )
    assert json_size is not None  # BYTES input sent as binary data: always a header length
    return HttpBody(body, {INFERENCE_HEADER: str(json_size)})


def json_body(image: bytes, class_count: int) -> HttpBody:
    """Plain JSON: the image base64 in `data`, the classification strings answered in JSON."""
    document = {
        "inputs": [
            {
                "name": IMAGE,
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(image).decode("ascii")],
            }
        ],
        "outputs": [{"name": SCORES, "parameters": {"classification": class_count}}],
    }
    return HttpBody(json.dumps(document).encode(), {"content-type": "application/json"})


def grpc_request(model: str, image: bytes, class_count: int) -> bytes:
    """A serialized ModelInferRequest, as tritonclient.grpc builds it for the same input."""
    request = pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=IMAGE, datatype="BYTES", shape=[1])],
        outputs=[
            pb.ModelInferRequest.InferRequestedOutputTensor(
                name=SCORES,
                parameters={"classification": pb.InferParameter(int64_param=class_count)},
            )
        ],
        raw_input_contents=[struct.pack("<I", len(image)) + image],
    )
    return bytes(request.SerializeToString())


def _class_index(entry: bytes | str) -> int:
    """Triton's classification string `score:index:label`."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split(":", 2)[1])


def predict_top1(body: bytes) -> int:
    """/predict's answer: the best prediction's class id."""
    return int(json.loads(body)["predictions"][0]["class_id"])


def rest_top1(body: bytes, header_length: str | None) -> int:
    """A /v2 infer answer, JSON or binary (the response's own header length), read by
    tritonclient.http."""
    result = httpclient.InferenceServerClient.parse_response_body(
        body, header_length=int(header_length) if header_length is not None else None
    )
    scores = result.as_numpy(SCORES)
    assert scores is not None, f"no {SCORES!r} output in {body[:200]!r}"
    return _class_index(scores.reshape(-1)[0])


def grpc_top1(body: bytes) -> int:
    """A serialized ModelInferResponse, read by tritonclient.grpc."""
    result = grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(body))
    scores = result.as_numpy(SCORES)
    assert scores is not None, f"no {SCORES!r} output"
    return _class_index(scores.reshape(-1)[0])
