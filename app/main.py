"""The application factory. Settings come in; nothing is read from the environment here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import start_http_server

from app import __version__
from app.api.errors import install_error_handlers
from app.api.middleware import RequestContextMiddleware
from app.api.routes import protected, router
from app.config import Settings
from app.metrics import Metrics
from app.service import PredictionService

log = logging.getLogger(__name__)

FatalHandler = Callable[[BaseException], None]

# Multipart framing and the `url` field on top of the image itself.
_BODY_OVERHEAD = 64 * 1024

DESCRIPTION = """
Image classification with a pretrained torchvision model (ResNet-50 by default).

* `POST /predict`: one image (upload, raw bytes or URL) -> top-k classes with scores.
* `POST /predict/batch`: several images in one multipart request.
* `GET /health`, `GET /ready`: liveness and readiness probes; `GET /metrics`: Prometheus.

Every error is JSON `{"error": {"code", "message"}, "request_id"}` with a stable `code`
(listed in docs/API.md). Every response carries `X-Request-ID`.
"""


def _exit_process(exc: BaseException) -> None:
    """Default when the model cannot load after start-up: stop the server, so the orchestrator
    sees a failed container rather than a live pod that never becomes ready."""
    log.critical("stopping: %s", exc)
    os.kill(os.getpid(), signal.SIGTERM)


def body_limit(settings: Settings) -> Callable[[str], int]:
    single = settings.max_upload_bytes + _BODY_OVERHEAD
    batch = settings.max_upload_bytes * settings.max_batch_files + _BODY_OVERHEAD

    def limit_for(path: str) -> int:
        return batch if path.rstrip("/").endswith("/batch") else single

    return limit_for


def _document_auth_as_optional(app: FastAPI) -> None:
    """Without SERVING_API_KEYS the key schemes stay documented, but as optional (`{}` in the
    security list means "no credentials"), so the document tells clients the truth about this
    instance."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    if isinstance(operation, dict) and operation.get("security"):
                        operation["security"] = [{}, *operation["security"]]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings, *, on_fatal: FatalHandler | None = None) -> FastAPI:
    metrics = Metrics()
    service = PredictionService(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Cheap and synchronous: no usable weights means start-up fails here, with the reason.
        service.resolve()
        metrics_server = (
            start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
            if settings.metrics_port
            else None
        )
        loader = asyncio.create_task(service.load(on_fatal or _exit_process), name="model-load")
        app.state.load_task = loader
        try:
            yield
        finally:
            service.start_draining()
            if not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            await service.close(settings.graceful_timeout_s)
            if metrics_server is not None:
                metrics_server[0].shutdown()
                metrics_server[0].server_close()

    app = FastAPI(
        title="resnet-serving",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "predict", "description": "Classify images."},
            {"name": "model", "description": "What is loaded."},
            {"name": "probes", "description": "Liveness, readiness, metrics."},
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = service
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(protected)
    # Raw bytes, ready for constant-time comparison; the Settings object keeps them secret.
    app.state.api_keys = [k.get_secret_value().encode() for k in settings.api_keys]
    if not settings.api_keys:
        _document_auth_as_optional(app)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, body_limit_for=body_limit(settings)
    )
    return app
