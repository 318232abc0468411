"""Response and request bodies as pydantic models: the OpenAPI document is generated from these,
so /docs always matches what the service sends."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ClassScoreOut(BaseModel):
    label: str = Field(description="Human-readable class name from the weights' metadata.")
    class_id: int = Field(description="Index of the class in the model's output (0-999).")
    score: float = Field(description="Softmax probability, 0..1.")


class TimingOut(BaseModel):
    fetch: float | None = Field(None, description="URL download, ms (URL requests only).")
    decode: float = Field(description="Image decode and preprocessing, ms.")
    queue: float = Field(description="Wait in the batch queue, ms.")
    inference: float = Field(description="The forward pass of the batch this image ran in, ms.")
    total: float = Field(description="Whole request inside the server, ms.")
    batch_size: int = Field(description="Images in the forward pass this image ran in.")


class ImageOut(BaseModel):
    format: str = Field(description="Detected format: JPEG, PNG, WEBP, GIF, BMP or TIFF.")
    width: int
    height: int


class PredictResponse(BaseModel):
    request_id: str
    model: str = Field(description="Architecture name, e.g. resnet50.")
    weights: str = Field(description="Weights id, e.g. ResNet50_Weights.IMAGENET1K_V2.")
    predictions: list[ClassScoreOut] = Field(description="Top-k classes, highest score first.")
    image: ImageOut
    timing_ms: TimingOut

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "5f0c6c1e9a0f4a55b8a3c1d2e3f40516",
                    "model": "resnet50",
                    "weights": "ResNet50_Weights.IMAGENET1K_V2",
                    "predictions": [
                        {"label": "tabby", "class_id": 281, "score": 0.61},
                        {"label": "tiger cat", "class_id": 282, "score": 0.21},
                        {"label": "Egyptian cat", "class_id": 285, "score": 0.09},
                        {"label": "lynx", "class_id": 287, "score": 0.01},
                        {"label": "Persian cat", "class_id": 283, "score": 0.004},
                    ],
                    "image": {"format": "JPEG", "width": 451, "height": 300},
                    "timing_ms": {
                        "fetch": None,
                        "decode": 3.2,
                        "queue": 0.4,
                        "inference": 41.8,
                        "total": 47.1,
                        "batch_size": 1,
                    },
                }
            ]
        }
    )


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code; see docs/API.md.")
    message: str = Field(description="What went wrong, for people.")


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str | None = None


class BatchItemOut(BaseModel):
    index: int = Field(description="Position of the file in the request.")
    filename: str | None = None
    predictions: list[ClassScoreOut] | None = Field(
        None, description="Top-k classes, when this image succeeded."
    )
    image: ImageOut | None = None
    timing_ms: TimingOut | None = None
    error: ErrorBody | None = Field(None, description="Why this image failed, when it did.")


class BatchResponse(BaseModel):
    request_id: str
    model: str
    weights: str
    results: list[BatchItemOut] = Field(description="One entry per file, in request order.")
    succeeded: int
    failed: int


class UrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1,
        max_length=4096,
        description="http(s) URL of an image; private addresses are refused.",
        examples=["https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg"],
    )


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: str = Field(description="ready, or starting/loading/warming/draining/failed.")
    ready: bool
    detail: str
    model: str
    weights: str | None = None
    weights_source: str | None = Field(
        None, description="file, cache, download or random (random = meaningless predictions)."
    )
    random_weights: bool | None = None
    backend: str | None = Field(None, description="openvino or torch: the engine that runs it.")
    device: str | None = None
    dtype: str | None = None


class ModelInfoResponse(BaseModel):
    model: str
    weights: str
    weights_source: str
    random_weights: bool
    num_classes: int
    input_size: int = Field(description="Side of the square crop fed to the model, pixels.")
    resize_size: int = Field(description="Short side the image is resized to before cropping.")
    mean: list[float]
    std: list[float]
    backend: str = Field(description="openvino or torch: the engine that runs the model.")
    device: str
    dtype: str = Field(description="What the matrix work runs in: float32, bfloat16 or int8.")
    compiled: bool = Field(description="torch.compile (torch backend only).")
    num_threads: int = Field(description="Threads of the forward pass.")
    max_batch_size: int


class LabelsResponse(BaseModel):
    model: str
    labels: list[str] = Field(description="Class names; the list index is the class_id.")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can return."""
    described = {
        400: "Bad input: not an image, undecodable, malformed request or refused URL.",
        401: "Missing or wrong API key.",
        413: "Too large: bytes, pixels (decompression bomb) or files per request.",
        415: "Unsupported media type or image format.",
        422: "Bad parameter, e.g. top_k outside 1..20.",
        502: "The image URL could not be fetched.",
        503: "Not ready, draining or overloaded; see Retry-After.",
        504: "The image URL was too slow, or the request's deadline passed in the queue.",
    }
    return {
        status: {"model": ErrorResponse, "description": described[status]} for status in statuses
    }
