"""OpenAPI documentation of the protocol's REST bodies (the KServe / Triton JSON objects).

These models document; the inference route parses its body itself (it may be JSON followed by
raw bytes), so they are never used to validate a request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Parameters = dict[str, bool | int | str]


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong.")
    code: str = Field(description="This service's stable error code (see docs/API.md).")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions this server supports.")


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch).")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(
        description="Send exactly one of them: `image` (BYTES, encoded image files) or "
        "`tensor` (FP32, preprocessed pixels)."
    )
    outputs: list[TensorMetadata]


class InferInputTensor(BaseModel):
    name: str = Field(description="`image` or `tensor`.")
    shape: list[int] = Field(description="`image`: [N] or [N, 1]; `tensor`: [N, 3, S, S].")
    datatype: str = Field(description="`BYTES` for `image`, `FP32` for `tensor`.")
    parameters: Parameters | None = Field(
        None,
        description="`binary_data_size`: bytes of this input after the JSON header (binary "
        "tensor data extension).",
    )
    data: list[Any] | None = Field(
        None,
        description="Row-major elements, flat or nested. `image` elements are base64-encoded "
        "image files; absent when the input travels as binary data.",
    )


class InferRequestedOutput(BaseModel):
    name: str = Field(description="`scores`.")
    parameters: Parameters | None = Field(
        None,
        description='`classification`: return the top-k as BYTES "score:index:label" '
        "strings; `binary_data`: return this output as raw bytes after the JSON header.",
    )


class InferRequest(BaseModel):
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: Parameters | None = Field(
        None,
        description="`binary_data_output`: outputs as raw bytes unless they say otherwise; "
        "`timeout`: microseconds this request may take (shortens the server's deadline).",
    )
    inputs: list[InferInputTensor] = Field(description="Exactly one input.")
    outputs: list[InferRequestedOutput] | None = Field(
        None, description="Absent: every output, as JSON (or as binary_data_output says)."
    )


class InferOutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(
        None, description="`binary_data_size` when the data follows the JSON header."
    )
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutputTensor]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` substituted in place, for an OpenAPI
    requestBody written by hand (a `$ref` to `#/$defs/...` would point at the document root)."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
