"""Response and request bodies as pydantic models: the OpenAPI document is generated from these,
so /docs always matches what the service sends. Each response model builds itself from the
core's result (`of`), so routes only choose which one to send."""

from __future__ import annotations

import time
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from app.errors import ServingError
from app.model.host import HostStatus, ModelCard
from app.serving.pipeline import Prediction


class ClassScoreOut(BaseModel):
    label: str = Field(description="Human-readable class name from the weights' metadata.")
    class_id: int = Field(description="Index of the class in the model's output (0-999).")
    score: float = Field(description="Softmax probability, 0..1.")

    @classmethod
    def all_of(cls, prediction: Prediction) -> list[Self]:
        return [
            cls(label=p.label, class_id=p.class_id, score=p.score) for p in prediction.predictions
        ]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class TimingOut(BaseModel):
    fetch: float | None = Field(None, description="URL download, ms (URL requests only).")
    cache: float | None = Field(
        None,
        description="Hashing the image and looking it up in the prediction cache, ms; null "
        "when the cache was not consulted (off, or `Cache-Control: no-store`).",
    )
    decode: float | None = Field(
        description="Image decode and preprocessing, ms; null when skipped (a cache hit)."
    )
    queue: float | None = Field(
        description="Wait in the batch queue, ms; null when skipped (a cache hit)."
    )
    inference: float | None = Field(
        description="The forward pass of the batch this image ran in, ms; null when skipped."
    )
    total: float = Field(description="Whole request inside the server, ms.")
    batch_size: int = Field(
        description="Images in the forward pass this image ran in; 0 for a cache hit."
    )
    skipped: list[str] = Field(
        default_factory=list,
        description='Stages this image did not run: ["decode", "queue", "inference"] for a '
        "cache hit, else empty.",
    )

    @classmethod
    def of(cls, prediction: Prediction, started: float) -> Self:
        """`started`: time.perf_counter() when the request arrived."""
        t = prediction.timing
        return cls(
            fetch=_ms(t.fetch_ms),
            cache=_ms(t.cache_ms),
            decode=_ms(t.decode_ms),
            queue=_ms(t.queue_ms),
            inference=_ms(t.inference_ms),
            total=round((time.perf_counter() - started) * 1000.0, 3),
            batch_size=prediction.batch_size,
            skipped=list(t.skipped),
        )


class ImageOut(BaseModel):
    format: str = Field(description="Detected format: JPEG, PNG, WEBP, GIF, BMP or TIFF.")
    width: int
    height: int

    @classmethod
    def of(cls, prediction: Prediction) -> Self:
        width, height = prediction.image_size
        return cls(format=prediction.image_format, width=width, height=height)


class PredictResponse(BaseModel):
    request_id: str
    model: str = Field(description="Architecture name, e.g. resnet50.")
    model_version: str = Field(
        description="The version that answered (SERVING_MODEL_VERSION), as the "
        "`X-Model-Version` header says."
    )
    weights: str = Field(description="Weights id, e.g. ResNet50_Weights.IMAGENET1K_V2.")
    predictions: list[ClassScoreOut] = Field(description="Top-k classes, highest score first.")
    image: ImageOut
    cache: Literal["hit", "miss"] = Field(
        description="hit: the scores came from the prediction cache (or from an identical "
        "image classified at the same moment); miss: this image was classified. Also the "
        "`X-Cache` response header."
    )
    timing_ms: TimingOut

    @classmethod
    def of(
        cls,
        prediction: Prediction,
        *,
        request_id: str,
        model: str,
        model_version: str,
        weights: str,
        started: float,
    ) -> Self:
        return cls(
            request_id=request_id,
            model=model,
            model_version=model_version,
            weights=weights,
            predictions=ClassScoreOut.all_of(prediction),
            image=ImageOut.of(prediction),
            cache=prediction.cache,
            timing_ms=TimingOut.of(prediction, started),
        )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "5f0c6c1e9a0f4a55b8a3c1d2e3f40516",
                    "model": "resnet50",
                    "model_version": "v1",
                    "weights": "ResNet50_Weights.IMAGENET1K_V2",
                    "predictions": [
                        {"label": "tabby", "class_id": 281, "score": 0.61},
                        {"label": "tiger cat", "class_id": 282, "score": 0.21},
                        {"label": "Egyptian cat", "class_id": 285, "score": 0.09},
                        {"label": "lynx", "class_id": 287, "score": 0.01},
                        {"label": "Persian cat", "class_id": 283, "score": 0.004},
                    ],
                    "image": {"format": "JPEG", "width": 451, "height": 300},
                    "cache": "miss",
                    "timing_ms": {
                        "fetch": None,
                        "cache": 0.05,
                        "decode": 3.2,
                        "queue": 0.4,
                        "inference": 41.8,
                        "total": 47.1,
                        "batch_size": 1,
                        "skipped": [],
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
    cache: Literal["hit", "miss"] | None = Field(
        None, description="hit or miss, as /predict's `cache`, when this image succeeded."
    )
    timing_ms: TimingOut | None = None
    error: ErrorBody | None = Field(None, description="Why this image failed, when it did.")

    @classmethod
    def of(cls, index: int, filename: str | None, prediction: Prediction, started: float) -> Self:
        return cls(
            index=index,
            filename=filename,
            predictions=ClassScoreOut.all_of(prediction),
            image=ImageOut.of(prediction),
            cache=prediction.cache,
            timing_ms=TimingOut.of(prediction, started),
        )

    @classmethod
    def failed(cls, index: int, filename: str | None, error: ServingError) -> Self:
        return cls(
            index=index, filename=filename, error=ErrorBody(code=error.code, message=error.message)
        )


class BatchResponse(BaseModel):
    request_id: str
    model: str
    model_version: str = Field(
        description="The version that answered (SERVING_MODEL_VERSION), as the "
        "`X-Model-Version` header says."
    )
    weights: str
    results: list[BatchItemOut] = Field(description="One entry per file, in request order.")
    succeeded: int
    failed: int

    @classmethod
    def of(
        cls,
        results: list[BatchItemOut],
        *,
        request_id: str,
        model: str,
        model_version: str,
        weights: str,
    ) -> Self:
        failed = sum(1 for r in results if r.error is not None)
        return cls(
            request_id=request_id,
            model=model,
            model_version=model_version,
            weights=weights,
            results=results,
            succeeded=len(results) - failed,
            failed=failed,
        )


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
        None,
        description="file, cache, download, ir (baked into the build-time model) or random "
        "(random = meaningless predictions).",
    )
    random_weights: bool | None = None
    backend: str | None = Field(None, description="openvino or torch: the engine that runs it.")
    device: str | None = None
    dtype: str | None = None
    model_source: str | None = Field(
        None,
        description="ir (the OpenVINO model compiled when the image was built), converted "
        "(torchvision's model converted to OpenVINO at start-up) or torch (run by torch).",
    )

    @classmethod
    def of(cls, status: HostStatus) -> Self:
        return cls(
            status=status.state.value,
            ready=status.ready,
            detail=status.detail,
            model=status.model,
            weights=status.weights,
            weights_source=status.weights_source,
            random_weights=status.random_weights,
            backend=status.backend,
            device=status.device,
            dtype=status.dtype,
            model_source=status.model_source,
        )


class ModelInfoResponse(BaseModel):
    model: str
    model_version: str = Field(
        description="The version this process serves (SERVING_MODEL_VERSION), as the "
        "`X-Model-Version` header says."
    )
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
    model_source: str = Field(
        description="ir (the OpenVINO model compiled when the image was built), converted "
        "(torchvision's model converted to OpenVINO at start-up) or torch (run by torch).",
    )
    cache: dict[str, Any] = Field(
        description="The prediction cache: `enabled`, `in_process` (capacity_bytes, "
        "held_bytes, entries; null when off) and `redis` (url without credentials, up, ttl_s, "
        "timeout_ms; null when none)."
    )
    shadow: dict[str, Any] | None = Field(
        None,
        description="The shadow comparison (SERVING_SHADOW_*), when on: `url` (the other "
        "version's base URL, without credentials), `percent`, `concurrency`, `timeout_s`, "
        "`in_flight` (copies being answered now) and `version` (the `X-Model-Version` its last "
        "answer carried; null before one came); null when off.",
    )

    @classmethod
    def of(
        cls,
        card: ModelCard,
        cache: dict[str, Any],
        *,
        model_version: str,
        shadow: dict[str, Any] | None = None,
    ) -> Self:
        pre = card.preprocessor
        return cls(
            model=card.model,
            model_version=model_version,
            weights=card.weights,
            weights_source=card.weights_source,
            random_weights=card.random_weights,
            num_classes=card.num_classes,
            input_size=pre.crop_size,
            resize_size=pre.resize_size,
            mean=list(pre.mean),
            std=list(pre.std),
            backend=card.backend,
            device=card.device,
            dtype=card.dtype,
            compiled=card.compiled,
            num_threads=card.num_threads,
            max_batch_size=card.max_batch_size,
            model_source=card.model_source,
            cache=cache,
            shadow=shadow,
        )


class LabelsResponse(BaseModel):
    model: str
    labels: list[str] = Field(description="Class names; the list index is the class_id.")

    @classmethod
    def of(cls, card: ModelCard) -> Self:
        return cls(model=card.model, labels=list(card.labels))


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
