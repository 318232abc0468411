"""REST bodies of the protocol: the inference request (plain JSON, or Triton's binary tensor data
extension) in, the inference response (JSON, or JSON header + raw outputs) out.

Binary extension: the `Inference-Header-Content-Length` header gives the length of the JSON
header at the start of the body; the raw bytes of an input follow it, its size in the input's
`parameters.binary_data_size`. Raw BYTES elements are each a 4-byte little-endian length then
the bytes; raw FP32 is little-endian. In plain JSON, BYTES elements are strings, so image files
travel base64-encoded (binary data cannot be a JSON string), as KServe's examples send them.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import numpy.typing as npt

from app.errors import InvalidRequestError
from app.oip.handler import InferenceRequest, InferenceResult
from app.oip.model import OipModel
from app.oip.tensors import (
    IMAGE_INPUT,
    InputSpec,
    Limits,
    RequestedOutput,
    check_images,
    check_input,
    check_outputs,
    check_tensor,
    images_from_raw,
    tensor_from_raw,
)

INFERENCE_HEADER = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


def decode_request(
    body: bytes,
    header_length: str | None,
    *,
    model: OipModel,
    model_name: str,
    model_version: str,
    limits: Limits,
) -> tuple[InferenceRequest, bool]:
    """The request, and whether outputs are binary unless an output says otherwise
    (`parameters.binary_data_output`)."""
    head, tail = _split(body, header_length)
    document = _load_json(head)
    parameters = _object(document.get("parameters", {}), "parameters")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequestError("`id` must be a string")

    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidRequestError(
            "`inputs` must be a list of exactly one input: `image` (BYTES) or `tensor` (FP32)"
        )
    tensor = _object(inputs[0], "inputs[0]")
    name = _string(tensor.get("name"), "inputs[0].name")
    datatype = _string(tensor.get("datatype"), f"input {name!r}: datatype")
    shape = tensor.get("shape")
    if not isinstance(shape, list):
        raise InvalidRequestError(f"input {name!r}: shape must be a list of integers")
    spec = check_input(name, datatype, shape, model, limits)
    images, values = _input_data(spec, tensor, tail, model.input_size, limits)

    outputs = check_outputs(_requested_outputs(document.get("outputs", [])), model.num_classes)
    request = InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        outputs=outputs,
        images=images,
        tensor=values,
        timeout_s=_timeout(parameters),
    )
    return request, _bool(parameters.get("binary_data_output", False), "binary_data_output")


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not text.isdigit() or not 0 < int(text) <= len(body):
        raise InvalidRequestError(
            f"{INFERENCE_HEADER} must be the length of the JSON header, between 1 and the "
            f"body's {len(body)} bytes, not {header_length[:40]!r}"
        )
    length = int(text)
    return body[:length], body[length:]


def _load_json(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"the request is not valid JSON: {str(exc)[:200]}") from None
    return _object(document, "the request")


def _input_data(
    spec: InputSpec, tensor: dict[str, Any], tail: bytes | None, size: int, limits: Limits
) -> tuple[list[bytes] | None, npt.NDArray[np.float32] | None]:
    parameters = _object(tensor.get("parameters", {}), f"input {spec.name!r}: parameters")
    binary_size = parameters.get("binary_data_size")
    is_image = spec.name == IMAGE_INPUT
    if binary_size is not None:
        if tail is None:
            raise InvalidRequestError(
                f"input {spec.name!r} declares binary_data_size but the request has no "
                f"{INFERENCE_HEADER} header"
            )
        if "data" in tensor:
            raise InvalidRequestError(f"input {spec.name!r} has both `data` and binary data")
        if _count(binary_size, "binary_data_size") != len(tail):
            raise InvalidRequestError(
                f"input {spec.name!r} declares binary_data_size {binary_size} but "
                f"{len(tail)} bytes follow the JSON header"
            )
        if is_image:
            return images_from_raw(spec, tail, limits), None
        return None, tensor_from_raw(spec, tail, size)
    if tail:
        raise InvalidRequestError(
            f"{len(tail)} bytes follow the JSON header but no input declares binary_data_size"
        )
    if "data" not in tensor:
        raise InvalidRequestError(f"input {spec.name!r} has no `data` and no binary data")
    if is_image:
        return check_images(spec, _base64_elements(spec.name, tensor["data"]), limits), None
    return None, check_tensor(spec, _numbers(spec.name, tensor["data"]), size)


def _base64_elements(name: str, data: object) -> list[bytes]:
    elements = []
    for index, item in enumerate(_flatten(data)):
        if not isinstance(item, str):
            raise InvalidRequestError(
                f"input {name!r}: element {index} must be a string (the base64 of an image file)"
            )
        try:
            elements.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidRequestError(
                f"input {name!r}: element {index} is not base64; in JSON, BYTES elements are "
                "base64-encoded image files (or send raw bytes with the binary extension)"
            ) from None
    return elements


def _flatten(data: object) -> list[object]:
    """Nested lists to a flat list, row-major, without recursion (nesting depth is the
    client's choice)."""
    if not isinstance(data, list):
        return [data]
    flat: list[object] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


_END = object()


def _numbers(name: str, data: object) -> npt.NDArray[np.float32]:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequestError(
            f"input {name!r}: `data` must be a list of numbers, flat or nested evenly"
        ) from None
    if array.dtype.kind not in "fiu":
        raise InvalidRequestError(f"input {name!r}: `data` must hold numbers only")
    with np.errstate(over="ignore"):
        return array.astype(np.float32).reshape(-1)


def _requested_outputs(value: object) -> list[RequestedOutput]:
    if not isinstance(value, list):
        raise InvalidRequestError("`outputs` must be a list")
    outputs = []
    for index, item in enumerate(value):
        output = _object(item, f"outputs[{index}]")
        name = _string(output.get("name"), f"outputs[{index}].name")
        parameters = _object(output.get("parameters", {}), f"output {name!r}: parameters")
        count = _count(parameters.get("classification", 0), f"output {name!r}: classification")
        binary = parameters.get("binary_data")
        outputs.append(
            RequestedOutput(
                name, count, None if binary is None else _bool(binary, f"{name}: binary_data")
            )
        )
    return outputs


def _timeout(parameters: dict[str, Any]) -> float | None:
    """Triton's `timeout` request parameter, in microseconds; 0 or absent: none."""
    micros = _count(parameters.get("timeout", 0), "parameters.timeout")
    return micros / 1e6 if micros > 0 else None


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a JSON object")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a string")
    return value


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"{what} must be a non-negative integer, not {value!r}")
    return value


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{what} must be true or false, not {value!r}")
    return value


def encode_response(
    result: InferenceResult, outputs: list[RequestedOutput], binary_default: bool
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (Content-Type, and the JSON header length when
    outputs travel as raw bytes after it)."""
    described: list[dict[str, object]] = []
    raw_parts: list[bytes] = []
    for tensor, output in zip(result.outputs, outputs, strict=True):
        entry: dict[str, object] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        binary = binary_default if output.binary is None else output.binary
        if binary:
            raw = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(raw)}
            raw_parts.append(raw)
        else:
            entry["data"] = tensor.json_data()
        described.append(entry)
    document: dict[str, object] = {
        "model_name": result.model_name,
        "model_version": result.model_version,
    }
    if result.id:
        document["id"] = result.id
    document["outputs"] = described
    head = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    if not raw_parts:
        return head, {"Content-Type": JSON_TYPE}
    headers = {"Content-Type": BINARY_TYPE, INFERENCE_HEADER: str(len(head))}
    return head + b"".join(raw_parts), headers
