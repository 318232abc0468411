"""GET /health, /ready and /metrics: for the orchestrator and Prometheus (always open)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import HostDep, MetricsDep, SettingsDep
from app.api.schemas import HealthResponse, ReadyResponse
from app.telemetry.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

router = APIRouter(tags=["probes"])


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness: the process answers",
    description="Always 200 while the process runs, even while the model loads or drains.",
)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: the model is loaded and warmed, and we are not draining",
    responses={503: {"model": ReadyResponse, "description": "Not ready; `detail` says why."}},
)
async def ready(host: HostDep) -> JSONResponse:
    body = ReadyResponse.of(host.status())
    if body.ready:
        return JSONResponse(body.model_dump())
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Exposition format."}},
)
async def metrics(request: Request, settings: SettingsDep, registry: MetricsDep) -> Response:
    if settings.metrics_port:
        raise StarletteHTTPException(404, "metrics are served on SERVING_METRICS_PORT")
    body, content_type = registry.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
