"""GET /model and /model/labels: what is loaded (behind the optional API key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.auth import require_api_key
from app.api.deps import CacheDep, HostDep, ShadowDep
from app.api.schemas import LabelsResponse, ModelInfoResponse, error_responses

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["model"])


@router.get(
    "/model",
    response_model=ModelInfoResponse,
    summary="The loaded model, its weights and preprocessing",
    responses=error_responses(401, 503),
)
async def model_info(host: HostDep, cache: CacheDep, shadow: ShadowDep) -> ModelInfoResponse:
    return ModelInfoResponse.of(
        host.card(),
        cache.describe(),
        model_version=host.settings.model_version,
        shadow=None if shadow is None else shadow.describe(),
    )


@router.get(
    "/model/labels",
    response_model=LabelsResponse,
    summary="Class names, indexed by class_id",
    responses=error_responses(401, 503),
)
async def model_labels(host: HostDep) -> LabelsResponse:
    return LabelsResponse.of(host.card())
