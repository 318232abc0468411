"""POST /predict and /predict/batch: classify images (behind the optional API key)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from starlette.datastructures import UploadFile

from app.api.auth import require_api_key
from app.api.deps import (
    Admitted,
    Call,
    HostDep,
    ImageInput,
    PipelineDep,
    SettingsDep,
    Uploads,
    batch_body,
    read_upload,
    single_image_body,
)
from app.api.openapi import BATCH_BODY, PREDICT_BODY
from app.api.schemas import BatchItemOut, BatchResponse, PredictResponse, error_responses
from app.errors import ServingError
from app.pipeline import RequestPipeline

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Classify one image",
    description=(
        "Upload an image (multipart field `file`, or the raw bytes with an `image/*` content "
        'type) or give its URL (JSON `{"url": ...}` or multipart field `url`). Returns the '
        "top-k ImageNet classes with softmax scores, a timing breakdown and the request id."
    ),
    responses=error_responses(400, 401, 413, 415, 422, 502, 503, 504),
    openapi_extra=PREDICT_BODY,
    dependencies=[single_image_body],
)
async def predict(
    call: Admitted, image: ImageInput, pipeline: PipelineDep, host: HostDep
) -> PredictResponse:
    if image.url is not None:
        prediction = await pipeline.classify_url(image.url, call.ticket, top_k=call.top_k)
    else:
        assert image.data is not None
        prediction = await pipeline.classify_bytes(image.data, call.ticket, top_k=call.top_k)
    return PredictResponse.of(
        prediction,
        request_id=call.request_id,
        model=host.settings.model_name,
        weights=host.weights_id,
        started=call.started,
    )


async def _one(
    pipeline: RequestPipeline, call: Call, index: int, upload: UploadFile, limit: int
) -> BatchItemOut:
    """One file of a batch: its own answer or its own error; the others go on."""
    try:
        data = await read_upload(upload, limit)
        prediction = await pipeline.classify_bytes(data, call.ticket, top_k=call.top_k)
    except ServingError as exc:
        return BatchItemOut.failed(index, upload.filename, exc)
    return BatchItemOut.of(index, upload.filename, prediction, call.started)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    summary="Classify several images in one request",
    description=(
        "Multipart field `files`, repeated, at most SERVING_MAX_BATCH_FILES. Results come back "
        "in request order; an image that fails gets an `error` entry instead of predictions "
        "and the others still succeed."
    ),
    responses=error_responses(400, 401, 413, 415, 422, 503),
    openapi_extra=BATCH_BODY,
    dependencies=[batch_body],
)
async def predict_batch(
    call: Admitted, uploads: Uploads, pipeline: PipelineDep, host: HostDep, settings: SettingsDep
) -> BatchResponse:
    limit = settings.max_upload_bytes
    results = await asyncio.gather(
        *(_one(pipeline, call, i, upload, limit) for i, upload in enumerate(uploads))
    )
    return BatchResponse.of(
        list(results),
        request_id=call.request_id,
        model=settings.model_name,
        weights=host.weights_id,
    )
