"""The protocol's operations, independent of the transport: model lookup, metadata, readiness
and inference. The REST router and the gRPC servicer parse their messages, call these, and
encode what comes back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.cache.policy import CachePolicy
from app.errors import InferenceError
from app.oip.errors import ModelNotFoundError
from app.oip.model import OipModel
from app.oip.tensors import (
    BYTES,
    CHANNELS,
    FP32,
    IMAGE_INPUT,
    SCORES_OUTPUT,
    TENSOR_INPUT,
    OutputTensor,
    RequestedOutput,
    encode_outputs,
)

# Triton's extensions this server implements (reported by server metadata).
EXTENSIONS = ("classification", "binary_tensor_data")


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    extensions: tuple[str, ...] = EXTENSIONS


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded, validated inference request: exactly one of `images` and `tensor`."""

    model_name: str
    model_version: str
    id: str
    outputs: list[RequestedOutput]
    images: list[bytes] | None = None
    tensor: npt.NDArray[np.float32] | None = None
    timeout_s: float | None = None  # Triton's `timeout` request parameter, if given

    @property
    def batch(self) -> int:
        if self.images is not None:
            return len(self.images)
        assert self.tensor is not None
        return int(self.tensor.shape[0])


@dataclass(frozen=True)
class InferenceResult:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]


def resolve(model: OipModel, name: str, version: str) -> str:
    """The version that serves a request for `name` (and `version`, empty = the latest)."""
    if name != model.name:
        raise ModelNotFoundError(f"unknown model {name!r}; this server serves {model.name!r}")
    versions = list(model.versions)
    if not version:
        return versions[-1]
    if version not in versions:
        raise ModelNotFoundError(
            f"model {name!r} has no version {version!r} here; this server serves "
            f"{'version' if len(versions) == 1 else 'versions'} "
            f"{', '.join(repr(v) for v in versions)}"
        )
    return version


def model_metadata(model: OipModel, name: str, version: str) -> ModelMetadata:
    """Both inputs are listed; a request sends exactly one of them (see docs/API.md)."""
    resolve(model, name, version)
    size = model.input_size
    return ModelMetadata(
        name=model.name,
        versions=tuple(model.versions),
        platform=model.platform,
        inputs=(
            TensorMetadata(IMAGE_INPUT, BYTES, (-1,)),
            TensorMetadata(TENSOR_INPUT, FP32, (-1, CHANNELS, size, size)),
        ),
        outputs=(TensorMetadata(SCORES_OUTPUT, FP32, (-1, model.num_classes)),),
    )


def model_ready(model: OipModel, name: str, version: str) -> bool:
    resolve(model, name, version)
    return model.is_ready()


def effective_deadline(deadline: float, timeout_s: float | None) -> float:
    """The transport's deadline, shortened by the request's own `timeout` parameter."""
    if timeout_s is None:
        return deadline
    return min(deadline, time.monotonic() + timeout_s)


async def infer(
    model: OipModel,
    request: InferenceRequest,
    deadline: float,
    cache: CachePolicy = CachePolicy.USE,
) -> InferenceResult:
    """The model (which admits the request first), then the requested outputs. `cache`: what
    the transport's Cache-Control lets the prediction cache do with encoded images."""
    version = resolve(model, request.model_name, request.model_version)
    deadline = effective_deadline(deadline, request.timeout_s)
    if request.images is not None:
        scores = await model.scores_from_images(request.images, deadline, cache)
    else:
        assert request.tensor is not None
        scores = await model.scores_from_tensor(request.tensor, deadline)
    if scores.shape != (request.batch, model.num_classes):
        # The model broke its contract: a server fault, not the caller's.
        raise InferenceError(
            f"the model returned scores of shape {scores.shape} for {request.batch} inputs"
        )
    outputs = encode_outputs(np.asarray(scores, dtype=np.float32), request.outputs, model.labels)
    return InferenceResult(model.name, version, request.id, outputs)
