"""The HTTP endpoints. Parsing and validation happen here; the work is the service's."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import Settings
from app.errors import (
    InvalidParameterError,
    InvalidRequestError,
    PayloadTooLargeError,
    ServingError,
    TooManyFilesError,
    UnsupportedMediaTypeError,
)
from app.imaging import SUPPORTED_MEDIA_TYPES
from app.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from app.service import Prediction, PredictionService, State

from .auth import require_api_key
from .schemas import (
    BatchItemOut,
    BatchResponse,
    ClassScoreOut,
    ErrorBody,
    HealthResponse,
    ImageOut,
    LabelsResponse,
    ModelInfoResponse,
    PredictResponse,
    ReadyResponse,
    TimingOut,
    UrlRequest,
    error_responses,
)

router = APIRouter()
# Prediction and model routes: behind the optional API key. Probes and metrics stay open.
protected = APIRouter(dependencies=[Depends(require_api_key)])

# Part/body content types taken as "an image, sniff it": browsers and curl send these.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_MULTIPART = "multipart/form-data"
_JSON = "application/json"

RequestTimeout = Annotated[
    str | None,
    Header(
        alias="X-Request-Timeout",
        description=(
            "Seconds this request may take, end to end (default SERVING_REQUEST_TIMEOUT_S, at "
            "most SERVING_MAX_REQUEST_TIMEOUT_S). A request that cannot make it is refused at "
            "once with 503 and Retry-After, or answered 504 if its time runs out in the queue."
        ),
    ),
]

TopK = Annotated[
    int | None,
    Query(ge=1, le=20, description="How many classes to return (1-20); default SERVING_TOP_K."),
]

_BINARY = {"type": "string", "format": "binary"}
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            'One image, as a multipart upload (field `file`), a URL (JSON `{"url": ...}` or '
            "multipart field `url`), or the raw image bytes with an image content type."
        ),
        "content": {
            _MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {**_BINARY, "description": "The image file."},
                        "url": {"type": "string", "maxLength": 4096, "description": "Image URL."},
                    },
                    # Exactly one of the two.
                    "oneOf": [{"required": ["file"]}, {"required": ["url"]}],
                },
                "encoding": {"file": {"contentType": ", ".join(SUPPORTED_MEDIA_TYPES)}},
            },
            _JSON: {
                "schema": UrlRequest.model_json_schema(),
                "example": {"url": "https://example.com/cat.jpg"},
            },
            **{media: {"schema": _BINARY} for media in SUPPORTED_MEDIA_TYPES},
        },
    }
}
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Several images as multipart field `files` (repeat the field).",
        "content": {
            _MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": _BINARY}},
                    "required": ["files"],
                }
            }
        },
    }
}


def _deadline(settings: Settings, header: str | None) -> float:
    """Absolute deadline (time.monotonic) from the X-Request-Timeout header or the default."""
    timeout = settings.request_timeout_s
    if header is not None:
        try:
            timeout = float(header)
        except ValueError:
            raise InvalidParameterError(
                f"X-Request-Timeout must be a number of seconds, not {header[:40]!r}"
            ) from None
        if not 0 < timeout < float("inf"):
            raise InvalidParameterError("X-Request-Timeout must be a positive number of seconds")
        timeout = min(timeout, settings.max_request_timeout_s)
    return time.monotonic() + timeout


@dataclass(frozen=True)
class _Call:
    """What every prediction route starts from, once the request has been admitted."""

    started: float
    service: PredictionService
    settings: Settings
    top_k: int
    deadline: float


def _admitted(request: Request, top_k: int | None, timeout_header: str | None) -> _Call:
    """The deadline, then admission control, before the body is read: a request that cannot
    be served in time costs nothing but this."""
    service = _service(request)
    settings = _settings(request)
    deadline = _deadline(settings, timeout_header)
    service.admit(deadline)
    return _Call(
        started=_request_started(request),
        service=service,
        settings=settings,
        top_k=top_k or settings.top_k,
        deadline=deadline,
    )


def _service(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _check_part_type(content_type: str | None) -> None:
    media = _media_type(content_type)
    if media in _GENERIC_TYPES or media.startswith("image/"):
        return
    raise UnsupportedMediaTypeError(
        f"content type {media!r} is not an image; send {', '.join(SUPPORTED_MEDIA_TYPES)}"
    )


async def _read_form(request: Request, *, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=16, max_part_size=16 * 1024)
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            raise TooManyFilesError(
                f"too many files in one request; the limit is {max_files} (SERVING_MAX_BATCH_FILES)"
            ) from exc
        raise InvalidRequestError(f"malformed multipart body: {detail}") from exc


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    _check_part_type(upload.content_type)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"the image is larger than {limit} bytes (SERVING_MAX_UPLOAD_BYTES)"
        )
    return data


def _url_from_json(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from exc
    try:
        return UrlRequest.model_validate(payload).url
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidParameterError(
            f'expected {{"url": "https://..."}}; {where}: {first["msg"]}'
        ) from None


def _timing(prediction: Prediction, started: float) -> TimingOut:
    t = prediction.timing
    return TimingOut(
        fetch=None if t.fetch_ms is None else round(t.fetch_ms, 3),
        decode=round(t.decode_ms, 3),
        queue=round(t.queue_ms, 3),
        inference=round(t.inference_ms, 3),
        total=round((time.perf_counter() - started) * 1000.0, 3),
        batch_size=prediction.batch_size,
    )


def _scores(prediction: Prediction) -> list[ClassScoreOut]:
    return [
        ClassScoreOut(label=p.label, class_id=p.class_id, score=p.score)
        for p in prediction.predictions
    ]


def _image(prediction: Prediction) -> ImageOut:
    width, height = prediction.image_size
    return ImageOut(format=prediction.image_format, width=width, height=height)


def _model_ids(service: PredictionService) -> tuple[str, str]:
    source = service.source
    return service.settings.model_name, source.weights_id if source else "unknown"


def _request_started(request: Request) -> float:
    started = request.scope.get("state", {}).get("started")
    return started if isinstance(started, float) else time.perf_counter()


def _request_id(request: Request) -> str:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else ""


@protected.post(
    "/predict",
    response_model=PredictResponse,
    summary="Classify one image",
    description=(
        "Upload an image (multipart field `file`, or the raw bytes with an `image/*` content "
        'type) or give its URL (JSON `{"url": ...}` or multipart field `url`). Returns the '
        "top-k ImageNet classes with softmax scores, a timing breakdown and the request id."
    ),
    responses=error_responses(400, 401, 413, 415, 422, 502, 503, 504),
    openapi_extra=_PREDICT_BODY,
    tags=["predict"],
)
async def predict(
    request: Request, top_k: TopK = None, timeout: RequestTimeout = None
) -> PredictResponse:
    call = _admitted(request, top_k, timeout)
    service, settings, k, deadline = call.service, call.settings, call.top_k, call.deadline
    media = _media_type(request.headers.get("content-type"))

    if media == _MULTIPART:
        form = await _read_form(request, max_files=1)
        upload, url = form.get("file"), form.get("url")
        if isinstance(upload, UploadFile) and isinstance(url, str):
            raise InvalidRequestError("send either a file or a url, not both")
        if isinstance(upload, UploadFile):
            data = await _read_upload(upload, settings.max_upload_bytes)
            prediction = await service.predict_bytes(data, top_k=k, deadline=deadline)
        elif isinstance(url, str):
            prediction = await service.predict_url(url, top_k=k, deadline=deadline)
        else:
            raise InvalidRequestError("the multipart body needs a field `file` (image) or `url`")
    elif media == _JSON:
        url = _url_from_json(await request.body())
        prediction = await service.predict_url(url, top_k=k, deadline=deadline)
    elif media.startswith("image/") or media in _GENERIC_TYPES - {""}:
        prediction = await service.predict_bytes(await request.body(), top_k=k, deadline=deadline)
    else:
        raise UnsupportedMediaTypeError(
            f"content type {media or 'none'!r} is not accepted; use multipart/form-data, "
            "application/json or an image/* type"
        )

    model, weights = _model_ids(service)
    return PredictResponse(
        request_id=_request_id(request),
        model=model,
        weights=weights,
        predictions=_scores(prediction),
        image=_image(prediction),
        timing_ms=_timing(prediction, call.started),
    )


@protected.post(
    "/predict/batch",
    response_model=BatchResponse,
    summary="Classify several images in one request",
    description=(
        "Multipart field `files`, repeated, at most SERVING_MAX_BATCH_FILES. Results come back "
        "in request order; an image that fails gets an `error` entry instead of predictions "
        "and the others still succeed."
    ),
    responses=error_responses(400, 401, 413, 415, 422, 503),
    openapi_extra=_BATCH_BODY,
    tags=["predict"],
)
async def predict_batch(
    request: Request, top_k: TopK = None, timeout: RequestTimeout = None
) -> BatchResponse:
    call = _admitted(request, top_k, timeout)
    service, settings, k, deadline = call.service, call.settings, call.top_k, call.deadline
    media = _media_type(request.headers.get("content-type"))
    if media != _MULTIPART:
        raise UnsupportedMediaTypeError(
            "send the images as multipart/form-data, field `files` (repeated)"
        )
    form = await _read_form(request, max_files=settings.max_batch_files)
    uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile)]
    if not uploads:
        raise InvalidRequestError("the multipart body needs one or more `files` fields")
    service.admit(deadline, images=len(uploads))

    async def one(index: int, upload: UploadFile) -> BatchItemOut:
        try:
            data = await _read_upload(upload, settings.max_upload_bytes)
            prediction = await service.predict_bytes(data, top_k=k, deadline=deadline)
        except ServingError as exc:
            return BatchItemOut(
                index=index,
                filename=upload.filename,
                error=ErrorBody(code=exc.code, message=exc.message),
            )
        return BatchItemOut(
            index=index,
            filename=upload.filename,
            predictions=_scores(prediction),
            image=_image(prediction),
            timing_ms=_timing(prediction, call.started),
        )

    results = await asyncio.gather(*(one(i, u) for i, u in enumerate(uploads)))
    failed = sum(1 for r in results if r.error is not None)
    model, weights = _model_ids(service)
    return BatchResponse(
        request_id=_request_id(request),
        model=model,
        weights=weights,
        results=list(results),
        succeeded=len(results) - failed,
        failed=failed,
    )


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness: the process answers",
    description="Always 200 while the process runs, even while the model loads or drains.",
    tags=["probes"],
)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: the model is loaded and warmed, and we are not draining",
    responses={503: {"model": ReadyResponse, "description": "Not ready; `detail` says why."}},
    tags=["probes"],
)
async def ready(request: Request) -> JSONResponse:
    service = _service(request)
    source = service.source
    info = service.runtime.info if service.runtime else None
    body = ReadyResponse(
        status=service.state.value,
        ready=service.state is State.READY,
        detail=service.state_detail,
        model=service.settings.model_name,
        weights=source.weights_id if source else None,
        weights_source=source.kind.value if source else None,
        random_weights=source.is_random if source else None,
        backend=info.backend if info else None,
        device=info.device if info else None,
        dtype=info.dtype if info else None,
    )
    status = 200 if body.ready else 503
    headers = None if body.ready else {"Retry-After": "5"}
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Exposition format."}},
    tags=["probes"],
)
async def metrics(request: Request) -> Response:
    if _settings(request).metrics_port:
        raise StarletteHTTPException(404, "metrics are served on SERVING_METRICS_PORT")
    return Response(request.app.state.metrics.render(), media_type=METRICS_CONTENT_TYPE)


@protected.get(
    "/model",
    response_model=ModelInfoResponse,
    summary="The loaded model, its weights and preprocessing",
    responses=error_responses(401, 503),
    tags=["model"],
)
async def model_info(request: Request) -> ModelInfoResponse:
    service = _service(request)
    runtime, source, pre = service.require_ready_model()
    info = runtime.info
    return ModelInfoResponse(
        model=source.model_name,
        weights=source.weights_id,
        weights_source=source.kind.value,
        random_weights=source.is_random,
        num_classes=runtime.num_classes,
        input_size=pre.crop_size,
        resize_size=pre.resize_size,
        mean=list(pre.mean),
        std=list(pre.std),
        backend=info.backend,
        device=info.device,
        dtype=info.dtype,
        compiled=info.compiled,
        num_threads=info.num_threads,
        max_batch_size=service.settings.max_batch_size,
    )


@protected.get(
    "/model/labels",
    response_model=LabelsResponse,
    summary="Class names, indexed by class_id",
    responses=error_responses(401, 503),
    tags=["model"],
)
async def model_labels(request: Request) -> LabelsResponse:
    service = _service(request)
    runtime, source, _ = service.require_ready_model()
    return LabelsResponse(model=source.model_name, labels=list(runtime.labels))
