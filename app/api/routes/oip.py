"""The Open Inference Protocol's REST routes (/v2/...), on the same app, core and guards as
/predict: the optional API key, a batch's body cap (base64 included), the request deadline, one
admission ticket per call (app/oip/served_model.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app import __version__
from app.api.auth import require_api_key
from app.api.deps import protocol_body, request_deadline
from app.oip.handler import ServerInfo
from app.oip.rest.routes import oip_router
from app.oip.served_model import ServedModel
from app.oip.tensors import Limits
from app.settings.config import Settings

SERVER_NAME = "resnet-serving"


def server_info() -> ServerInfo:
    return ServerInfo(name=SERVER_NAME, version=__version__)


def limits(settings: Settings) -> Limits:
    """A protocol call carries at most as many images as /predict/batch, each as large."""
    return Limits(max_images=settings.max_batch_files, max_image_bytes=settings.max_upload_bytes)


def router(settings: Settings, model: ServedModel) -> APIRouter:
    def deadline(request: Request) -> float:
        return request_deadline(request, settings)

    return oip_router(
        lambda request: model,
        get_deadline=deadline,
        limits=limits(settings),
        server=server_info(),
        protected=[Depends(require_api_key)],
        infer_dependencies=[protocol_body],
    )
