"""Malformed ModelInferRequests (random fields, wrong types and sizes, garbage bytes) against a
real gRPC server: every answer is OK or a status from the protocol's set for bad input, never
UNKNOWN or INTERNAL (a crash or an unhandled error)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.oip.grpc import grpc_predict_v2_pb2 as pb
from app.oip.tensors import Limits
from helpers.oip_fake import SIZE, FakeModel, image_file
from helpers.oip_servers import GrpcServerThread

INFER = "/inference.GRPCInferenceService/ModelInfer"
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a tiny `timeout` parameter
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message over the size limit
}
PIXELS = 3 * SIZE * SIZE
IMAGE = image_file(0)


@pytest.fixture(scope="module")
def infer() -> Iterator[Any]:
    server = GrpcServerThread(FakeModel(), limits=Limits(max_images=4, max_image_bytes=8192))
    channel = grpc.insecure_channel(server.target)
    try:
        yield channel.unary_unary(INFER)  # bytes in, bytes out: any payload can be sent
    finally:
        channel.close()
        server.close()


def mostly(value: Any, *others: Any, weight: int = 8) -> st.SearchStrategy[Any]:
    """`value` most of the time, so that examples get past the first checks and reach the
    deeper ones; otherwise one of `others`."""
    return st.sampled_from([value] * weight + list(others))


names = st.sampled_from(["image", "tensor", "scores", "", "IMAGE"]) | st.text(max_size=8)
datatypes = st.sampled_from(["BYTES", "FP32", "FP16", "INT64", ""]) | st.text(max_size=6)
dims = st.sampled_from([0, 1, 2, 3, SIZE, 5]) | st.integers(-(2**63), 2**63 - 1)
images = mostly(IMAGE, b"", b"GIF89a", base64.b64encode(IMAGE), weight=3) | st.binary(max_size=64)
params = st.one_of(
    st.builds(pb.InferParameter, int64_param=st.integers(0, 20)),
    st.builds(pb.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
    st.builds(pb.InferParameter, bool_param=st.booleans()),
    st.builds(pb.InferParameter, string_param=st.text(max_size=8)),
    st.builds(pb.InferParameter),
)


def _serialize(elements: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A nearly valid request (a batch of images or of pixels, in `contents` or raw), then a
    few of its parts replaced by anything."""
    message = pb.ModelInferRequest(
        model_name=draw(mostly("fake", "", "other")),
        model_version=draw(mostly("", "1", "2", "7")),
        id=draw(st.text(max_size=8)),
    )
    is_image = draw(st.booleans())
    batch = draw(st.integers(1, 5))
    shape = [batch] if is_image else [batch, 3, SIZE, SIZE]
    if draw(st.integers(0, 5)) == 0:
        shape = draw(st.lists(dims, max_size=5))
    count = batch + draw(mostly(0, -1, 1))
    tensor = message.inputs.add(
        name=draw(mostly("image" if is_image else "tensor", "tensor", "image", "x", "")),
        datatype=draw(mostly("BYTES" if is_image else "FP32", "BYTES", "FP32", "FP16", "")),
        shape=shape,
    )
    raw = draw(st.booleans())
    if is_image:
        elements = draw(st.lists(images, min_size=max(count, 0), max_size=max(count, 0)))
        if raw:
            message.raw_input_contents.append(_serialize(elements))
        else:
            tensor.contents.bytes_contents.extend(elements)
    else:
        pixels = draw(st.sampled_from([0.25, 0.0, float("nan"), float("inf")]))
        values = [0.5] * (max(count, 0) * PIXELS - 1) + [pixels]
        if raw:
            message.raw_input_contents.append(struct.pack(f"<{len(values)}f", *values))
        else:
            tensor.contents.fp32_contents.extend(values)
    # Anything else, sometimes: a second input, stray contents fields, more raw entries.
    if draw(st.integers(0, 7)) == 0:
        message.inputs.add(name=draw(names), datatype=draw(datatypes), shape=draw(st.lists(dims)))
    if draw(st.integers(0, 7)) == 0:
        tensor.contents.int64_contents.extend(draw(st.lists(st.integers(0, 9), max_size=3)))
    if draw(st.integers(0, 7)) == 0:
        message.raw_input_contents.extend(draw(st.lists(st.binary(max_size=32), max_size=2)))
    for key in draw(st.lists(st.sampled_from(["binary_data_size", "x"]), max_size=2)):
        tensor.parameters[key].CopyFrom(draw(params))
    for _ in range(draw(mostly(1, 0, 2, weight=3))):
        output = message.outputs.add(name=draw(mostly("scores", "", "probabilities")))
        if draw(st.booleans()):
            output.parameters["classification"].CopyFrom(draw(params))
    for key in draw(st.lists(st.sampled_from(["timeout", "priority", "zzz"]), max_size=2)):
        message.parameters[key].CopyFrom(draw(params))
    return message


def _status(infer: Any, payload: bytes) -> grpc.StatusCode:
    try:
        infer(payload, timeout=30)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=requests())
def test_malformed_messages_get_protocol_status_codes(
    infer: Any, message: pb.ModelInferRequest
) -> None:
    assert _status(infer, message.SerializeToString()) in ALLOWED


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=256))
def test_garbage_bytes_get_protocol_status_codes(infer: Any, payload: bytes) -> None:
    assert _status(infer, payload) in ALLOWED
