"""The gRPC definition: the committed generated modules are what scripts/gen-proto.sh makes
from the committed .proto, and its messages are wire-compatible with Triton's client."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient
from google.protobuf import descriptor_pool

from app.oip.grpc import grpc_predict_v2_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_are_current() -> None:
    result = subprocess.run(
        ["scripts/gen-proto.sh", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_messages_live_apart_from_the_clients_definitions() -> None:
    """tritonclient registers the same `inference.*` names in protobuf's default pool; ours are
    in a pool of their own, so both import into one process (this one)."""
    default = descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest")
    assert default.file.name == grpcclient.service_pb2.DESCRIPTOR.name == "grpc_service.proto"
    assert pb.ModelInferRequest.DESCRIPTOR.file.name == "grpc_predict_v2.proto"


def test_messages_match_tritonclients_field_numbers() -> None:
    """Wire compatibility: every field of ours exists in Triton's definition with the same
    number, type and cardinality (Triton's messages are a superset of the KServe definition)."""
    theirs = grpcclient.service_pb2.DESCRIPTOR.message_types_by_name

    def check(mine: Any, other: Any) -> None:
        for field in mine.fields:
            twin = other.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (
                twin.number,
                twin.type,
                twin.is_repeated,
            ), f"{mine.full_name}.{field.name}"
        for nested in mine.nested_types:
            check(nested, other.nested_types_by_name[nested.name])

    for name, message in pb.DESCRIPTOR.message_types_by_name.items():
        check(message, theirs[name])
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    triton = grpcclient.service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == triton.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        twin = triton.methods_by_name[method.name]
        assert method.input_type.full_name == twin.input_type.full_name
        assert method.output_type.full_name == twin.output_type.full_name
