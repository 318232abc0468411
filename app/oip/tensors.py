"""The tensors of this model's inference requests and responses, whatever the transport.

Inputs, both batched along dimension 0, exactly one per request:
- `image`: BYTES [N] or [N, 1], each element one encoded image file (JPEG, PNG, ...);
- `tensor`: FP32 [N, 3, S, S], already preprocessed (S = the model's input size).
Output `scores`: FP32 [N, num_classes] softmax probabilities, or, with Triton's classification
extension (count k), BYTES [N, k] strings "<score>:<index>:<label>", highest score first.

Validation here raises the service's own errors (400 invalid_request, 413 too_many_files /
payload_too_large) with messages that name the input and the rule; transports (REST JSON,
the binary extension, gRPC messages) only extract values and call these checks.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.errors import InvalidRequestError, PayloadTooLargeError, TooManyFilesError
from app.oip.model import OipModel, Scores

BYTES = "BYTES"
FP32 = "FP32"
IMAGE_INPUT = "image"
TENSOR_INPUT = "tensor"
SCORES_OUTPUT = "scores"
CHANNELS = 3

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Limits:
    """Per-request limits, the same as /predict/batch's."""

    max_images: int  # SERVING_MAX_BATCH_FILES: images (or tensor rows) in one request
    max_image_bytes: int  # SERVING_MAX_UPLOAD_BYTES: one encoded image


@dataclass(frozen=True)
class InputSpec:
    """A validated input header: which input, how many images, how many elements follow."""

    name: str
    batch: int
    element_count: int


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # top-k strings instead of scores when > 0
    binary: bool | None = None  # REST only: per-output binary_data; None = request default


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    scores: npt.NDArray[np.float32] | None = None  # FP32, row-major
    strings: tuple[bytes, ...] | None = None  # BYTES, row-major

    def raw(self) -> bytes:
        """The protocol's raw layout: little-endian elements, BYTES length-prefixed."""
        if self.strings is not None:
            return serialize_bytes(self.strings)
        assert self.scores is not None
        return np.ascontiguousarray(self.scores, dtype="<f4").tobytes()

    def json_data(self) -> list[float] | list[str]:
        """The flattened elements for a JSON response."""
        if self.strings is not None:
            return [s.decode("utf-8") for s in self.strings]
        assert self.scores is not None
        values: list[float] = self.scores.reshape(-1).tolist()
        return values


def _describe_inputs() -> str:
    return f"`{IMAGE_INPUT}` ({BYTES}) or `{TENSOR_INPUT}` ({FP32})"


def check_input(
    name: str, datatype: str, shape: Sequence[int], model: OipModel, limits: Limits
) -> InputSpec:
    """Name, datatype and shape of the one input, before any of its data is read."""
    if name not in (IMAGE_INPUT, TENSOR_INPUT):
        raise InvalidRequestError(f"unknown input {name!r}: send one of {_describe_inputs()}")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise InvalidRequestError(
            f"input {name!r}: shape must be a list of non-negative integers, not {list(shape)}"
        )
    if name == IMAGE_INPUT:
        spec = _check_image_shape(datatype, shape)
    else:
        spec = _check_tensor_shape(datatype, shape, model.input_size)
    if spec.batch == 0:
        raise InvalidRequestError(f"input {name!r}: the batch is empty (shape {list(shape)})")
    if spec.batch > limits.max_images:
        raise TooManyFilesError(
            f"input {name!r} holds {spec.batch} images; at most {limits.max_images} are "
            "accepted in one request (SERVING_MAX_BATCH_FILES)"
        )
    return spec


def _check_image_shape(datatype: str, shape: Sequence[int]) -> InputSpec:
    if datatype != BYTES:
        raise InvalidRequestError(
            f"input {IMAGE_INPUT!r} has datatype {BYTES} (encoded image files), not {datatype!r}"
        )
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return InputSpec(IMAGE_INPUT, shape[0], shape[0])
    raise InvalidRequestError(
        f"input {IMAGE_INPUT!r} has shape [N] or [N, 1] (one encoded image per row), "
        f"not {list(shape)}"
    )


def _check_tensor_shape(datatype: str, shape: Sequence[int], size: int) -> InputSpec:
    if datatype != FP32:
        raise InvalidRequestError(
            f"input {TENSOR_INPUT!r} has datatype {FP32} (preprocessed pixels), not {datatype!r}"
        )
    if len(shape) != 4 or shape[1] != CHANNELS or shape[2] != size or shape[3] != size:
        raise InvalidRequestError(
            f"input {TENSOR_INPUT!r} has shape [N, {CHANNELS}, {size}, {size}], not {list(shape)}"
        )
    return InputSpec(TENSOR_INPUT, shape[0], math.prod(shape))


def check_images(spec: InputSpec, elements: Sequence[bytes], limits: Limits) -> list[bytes]:
    """The image files of a BYTES input, checked against its shape and the size limit."""
    if len(elements) != spec.element_count:
        raise InvalidRequestError(
            f"input {spec.name!r}: its shape holds {spec.element_count} elements but "
            f"{len(elements)} were sent"
        )
    for index, element in enumerate(elements):
        if len(element) > limits.max_image_bytes:
            raise PayloadTooLargeError(
                f"input {spec.name!r}, image {index}: {len(element)} bytes is more than "
                f"{limits.max_image_bytes} (SERVING_MAX_UPLOAD_BYTES)"
            )
    return list(elements)


def check_tensor(
    spec: InputSpec, values: npt.NDArray[np.float32], input_size: int
) -> npt.NDArray[np.float32]:
    """The FP32 batch [N, 3, S, S] from its flat (or nested) elements."""
    if values.size != spec.element_count:
        raise InvalidRequestError(
            f"input {spec.name!r}: its shape holds {spec.element_count} elements but "
            f"{values.size} were sent"
        )
    if not np.isfinite(values).all():
        raise InvalidRequestError(f"input {spec.name!r} contains NaN or infinite values")
    shape = (spec.batch, CHANNELS, input_size, input_size)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


def tensor_from_raw(spec: InputSpec, raw: bytes, input_size: int) -> npt.NDArray[np.float32]:
    """FP32 elements in the protocol's raw layout (little-endian, row-major)."""
    expected = spec.element_count * 4
    if len(raw) != expected:
        raise InvalidRequestError(
            f"input {spec.name!r}: {spec.element_count} FP32 elements are {expected} bytes, "
            f"but {len(raw)} were sent"
        )
    return check_tensor(spec, np.frombuffer(raw, dtype="<f4"), input_size)


def images_from_raw(spec: InputSpec, raw: bytes, limits: Limits) -> list[bytes]:
    """BYTES elements in the raw layout: each a 4-byte little-endian length, then its bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(elements) == spec.element_count:
            raise InvalidRequestError(
                f"input {spec.name!r}: bytes follow its {spec.element_count} elements"
            )
        if offset + _LENGTH.size > len(raw):
            raise InvalidRequestError(
                f"input {spec.name!r}: element {len(elements)} has a truncated length prefix"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidRequestError(
                f"input {spec.name!r}: element {len(elements)} declares {length} bytes but "
                f"only {len(raw) - offset} follow"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    return check_images(spec, elements, limits)


def serialize_bytes(elements: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def check_outputs(requested: Sequence[RequestedOutput], num_classes: int) -> list[RequestedOutput]:
    """The outputs to return: the requested ones, or every output when none is named."""
    if not requested:
        return [RequestedOutput(SCORES_OUTPUT)]
    seen: set[str] = set()
    for output in requested:
        if output.name != SCORES_OUTPUT:
            raise InvalidRequestError(
                f"unknown output {output.name!r}: this model has one output, {SCORES_OUTPUT!r}"
            )
        if output.name in seen:
            raise InvalidRequestError(f"output {output.name!r} is requested twice")
        seen.add(output.name)
        if output.classification < 0:
            raise InvalidRequestError(
                f"output {output.name!r}: classification must be a count >= 0, "
                f"not {output.classification}"
            )
    return list(requested)


def classification_strings(scores: Scores, count: int, labels: Sequence[str]) -> tuple[bytes, ...]:
    """Triton's classification format, row by row: the `count` highest scores as
    "<score>:<index>:<label>", score descending (ties: lower index first). The score is written
    with six decimals, as Triton's C++ `std::to_string` writes it."""
    k = min(count, scores.shape[1])
    # A stable sort of the negated scores keeps equal scores in index order.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out: list[bytes] = []
    for row, indices in zip(scores, order, strict=True):
        for index in indices:
            label = labels[int(index)]
            out.append(f"{float(row[index]):f}:{int(index)}:{label}".encode())
    return tuple(out)


def encode_outputs(
    scores: Scores, outputs: Sequence[RequestedOutput], labels: Sequence[str]
) -> list[OutputTensor]:
    batch = scores.shape[0]
    tensors: list[OutputTensor] = []
    for output in outputs:
        if output.classification > 0:
            k = min(output.classification, scores.shape[1])
            strings = classification_strings(scores, k, labels)
            tensors.append(OutputTensor(output.name, BYTES, (batch, k), strings=strings))
        else:
            tensors.append(OutputTensor(output.name, FP32, tuple(scores.shape), scores=scores))
    return tensors
