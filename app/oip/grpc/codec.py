"""gRPC messages of the protocol: ModelInferRequest in, ModelInferResponse out, and the
metadata messages.

An input's elements come either in its `contents` (the repeated field of its datatype:
`bytes_contents` for BYTES, `fp32_contents` for FP32) or in `raw_input_contents`, one entry
per input in order (then no input may use `contents`). Outputs always leave as
`raw_output_contents`, which is what Triton sends and what tritonclient reads for FP32.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from app.errors import InvalidRequestError
from app.oip.grpc import grpc_predict_v2_pb2 as pb
from app.oip.handler import InferenceRequest, InferenceResult, ModelMetadata, ServerInfo
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

# The fields of InferTensorContents, and the one each accepted datatype uses.
_CONTENT_FIELDS = tuple(f.name for f in pb.InferTensorContents.DESCRIPTOR.fields)
_FIELD_FOR_INPUT = {IMAGE_INPUT: "bytes_contents"}
_TENSOR_FIELD = "fp32_contents"


def decode_request(
    message: pb.ModelInferRequest, model: OipModel, limits: Limits
) -> InferenceRequest:
    if len(message.inputs) != 1:
        raise InvalidRequestError(
            f"send exactly one input, `image` (BYTES) or `tensor` (FP32), not {len(message.inputs)}"
        )
    tensor = message.inputs[0]
    spec = check_input(tensor.name, tensor.datatype, list(tensor.shape), model, limits)
    images = values = None
    if message.raw_input_contents:
        if len(message.raw_input_contents) != len(message.inputs):
            raise InvalidRequestError(
                f"raw_input_contents has {len(message.raw_input_contents)} entries for "
                f"{len(message.inputs)} input"
            )
        if tensor.HasField("contents"):
            raise InvalidRequestError(
                f"input {spec.name!r} has `contents` while raw_input_contents is used"
            )
        raw = message.raw_input_contents[0]
        if spec.name == IMAGE_INPUT:
            images = images_from_raw(spec, raw, limits)
        else:
            values = tensor_from_raw(spec, raw, model.input_size)
    else:
        images, values = _from_contents(spec, tensor.contents, model.input_size, limits)
    outputs = check_outputs([_requested(o) for o in message.outputs], model.num_classes)
    return InferenceRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        id=message.id,
        outputs=outputs,
        images=images,
        tensor=values,
        timeout_s=_timeout(message.parameters),
    )


def _from_contents(
    spec: InputSpec, contents: pb.InferTensorContents, size: int, limits: Limits
) -> tuple[list[bytes] | None, npt.NDArray[np.float32] | None]:
    wanted = _FIELD_FOR_INPUT.get(spec.name, _TENSOR_FIELD)
    for field in _CONTENT_FIELDS:
        if field != wanted and len(getattr(contents, field)):
            raise InvalidRequestError(
                f"input {spec.name!r} carries its elements in contents.{wanted}, not "
                f"contents.{field}"
            )
    if spec.name == IMAGE_INPUT:
        return check_images(spec, list(contents.bytes_contents), limits), None
    values = np.fromiter(contents.fp32_contents, dtype=np.float32)
    return None, check_tensor(spec, values, size)


def _requested(output: pb.ModelInferRequest.InferRequestedOutputTensor) -> RequestedOutput:
    count = 0
    if "classification" in output.parameters:
        value = output.parameters["classification"]
        if value.WhichOneof("parameter_choice") != "int64_param":
            raise InvalidRequestError(
                f"output {output.name!r}: the classification parameter is an int64_param"
            )
        count = value.int64_param
        if count < 0:
            raise InvalidRequestError(
                f"output {output.name!r}: classification must be a count >= 0, not {count}"
            )
    return RequestedOutput(output.name, count)


def _timeout(parameters: Mapping[str, pb.InferParameter]) -> float | None:
    """Triton's `timeout` request parameter (int64, microseconds); 0 or absent: none."""
    if "timeout" not in parameters:
        return None
    value = parameters["timeout"]
    if value.WhichOneof("parameter_choice") != "int64_param" or value.int64_param < 0:
        raise InvalidRequestError("the timeout parameter is an int64_param of microseconds >= 0")
    micros: int = value.int64_param
    return micros / 1e6 if micros > 0 else None


def encode_response(result: InferenceResult) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id
    )
    for tensor in result.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(tensor.raw())
    return response


def server_metadata(info: ServerInfo) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=info.name, version=info.version, extensions=list(info.extensions)
    )


def model_metadata(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(
        name=meta.name, versions=list(meta.versions), platform=meta.platform
    )
    for tensor in meta.inputs:
        response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    for tensor in meta.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    return response
