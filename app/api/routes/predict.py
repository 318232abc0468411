"""POST /predict and /predict/batch: classify images (behind the optional API key)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from app.api.auth import require_api_key
from app.api.deps import (
    Admitted,
    CachePolicyDep,
    HostDep,
    ImageInput,
    PipelineDep,
    SettingsDep,
    ShadowDep,
    Uploads,
    batch_body,
    single_image_body,
)
from app.api.inputs import read_upload
from app.api.openapi import BATCH_BODY, PREDICT_BODY
from app.api.schemas import BatchItemOut, BatchResponse, PredictResponse, error_responses
from app.errors import ServingError

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["predict"])

ShadowHeader = Annotated[
    str | None,
    Header(
        alias="X-Shadow",
        description="`1` on a shadow copy that another version of the model sent "
        "(SERVING_SHADOW_URL): answered as any request, and never shadowed again.",
    ),
]


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Classify one image",
    description=(
        "Upload an image (multipart field `file`, or the raw bytes with an `image/*` content "
        'type) or give its URL (JSON `{"url": ...}` or multipart field `url`). Returns the '
        "top-k ImageNet classes with softmax scores, a timing breakdown and the request id. "
        "A repeated image is answered from the prediction cache (`cache`, `X-Cache`); "
        "`Cache-Control: no-cache` or `no-store` ask otherwise. With SERVING_SHADOW_URL set, "
        "a sample of the answered images is also sent to the other model version in the "
        "background, which changes nothing in the answer."
    ),
    responses=error_responses(400, 401, 413, 415, 422, 502, 503, 504),
    openapi_extra=PREDICT_BODY,
    dependencies=[single_image_body],
)
async def predict(
    call: Admitted,
    image: ImageInput,
    pipeline: PipelineDep,
    host: HostDep,
    cache: CachePolicyDep,
    shadow: ShadowDep,
    response: Response,
    x_shadow: ShadowHeader = None,
) -> PredictResponse:
    if image.url is not None:
        prediction, data = await pipeline.classify_url(
            image.url, call.ticket, top_k=call.top_k, cache=cache
        )
    else:
        assert image.data is not None
        data = image.data
        prediction = await pipeline.classify_bytes(data, call.ticket, top_k=call.top_k, cache=cache)
    if shadow is not None:  # in the background: this answer is made already
        top1 = prediction.predictions[0].class_id
        shadow.offer(data, top1=top1, request_id=call.request_id, shadow_header=x_shadow)
    response.headers["X-Cache"] = prediction.cache
    return PredictResponse.of(
        prediction,
        request_id=call.request_id,
        model=host.settings.model_name,
        model_version=host.settings.model_version,
        weights=host.weights_id,
        started=call.started,
    )


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
    call: Admitted,
    uploads: Uploads,
    pipeline: PipelineDep,
    host: HostDep,
    settings: SettingsDep,
    cache: CachePolicyDep,
) -> BatchResponse:
    limit = settings.max_upload_bytes
    # Each file is read and checked in its own task: a wrong type or size fails that file only.
    images = [partial(read_upload, upload, limit) for upload in uploads]
    scored = await pipeline.score_many(call.ticket, images, fail_fast=False, cache=cache)
    results = [
        BatchItemOut.failed(i, upload.filename, outcome)
        if isinstance(outcome, ServingError)
        else BatchItemOut.of(
            i, upload.filename, pipeline.prediction(outcome, call.top_k), call.started
        )
        for i, (upload, outcome) in enumerate(zip(uploads, scored, strict=True))
    ]
    return BatchResponse.of(
        results,
        request_id=call.request_id,
        model=settings.model_name,
        model_version=settings.model_version,
        weights=host.weights_id,
    )
