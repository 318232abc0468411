"""The application factory. Settings come in; nothing is read from the environment here.

The HTTP app is a thin shell around one `Service` (app/serving/service.py): the routes
(app/api/routes/) reach it through typed dependencies (app/api/deps.py), the middleware
(app/api/middleware/) does one job per layer, and the HTTP metrics are the instrumentator's
(app/api/http_metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace.export import SpanExporter

from app import __version__
from app.api.bodies import single_image_limit
from app.api.errors import install_error_handlers
from app.api.http_metrics import instrument
from app.api.middleware import install_middleware
from app.api.openapi import document_auth_as_optional
from app.api.routes import include_routes, oip
from app.oip.grpc.interceptors import MetricsObserver
from app.oip.grpc.server import OipGrpcServer, start_grpc_server
from app.oip.served_model import ServedModel
from app.serving.service import Service
from app.settings.config import Settings
from app.shadow.comparison import build_shadow
from app.telemetry.metrics import Metrics
from app.telemetry.metrics_server import metrics_port
from app.telemetry.tracing import Tracing, TracingConfig

log = logging.getLogger(__name__)

FatalHandler = Callable[[BaseException], None]

DESCRIPTION = """
Image classification with a pretrained torchvision model (ResNet-50 by default).

* `POST /predict`: one image (upload, raw bytes or URL) -> top-k classes with scores.
* `POST /predict/batch`: several images in one multipart request.
* `GET /health`, `GET /ready`: liveness and readiness probes; `GET /metrics`: Prometheus.
* `/v2/...`: the Open Inference Protocol (KServe V2 / Triton), also over gRPC on
  SERVING_GRPC_PORT; its errors are `{"error": "..."}` as the protocol says.

Every error is JSON `{"error": {"code", "message"}, "request_id"}` with a stable `code`
(listed in docs/API.md). Every response carries `X-Request-ID`, and `X-Model-Version`: the
version this process serves (SERVING_MODEL_VERSION).
"""


async def _start(service: Service, on_fatal: FatalHandler) -> None:
    """Load in the background, so /health answers during a slow load; a failure is fatal."""
    try:
        await service.start()
    except Exception as exc:
        on_fatal(exc)


async def _grpc(
    settings: Settings,
    service: Service,
    model: ServedModel,
    api_keys: list[bytes],
    tracing: Tracing,
) -> OipGrpcServer | None:
    """The Open Inference Protocol over gRPC, in this event loop (SERVING_GRPC_PORT; 0 = off)."""
    if not settings.grpc_port:
        return None
    return await start_grpc_server(
        lambda: model,
        port=settings.grpc_port,
        host=settings.host,
        api_keys=api_keys,
        limits=oip.limits(settings),
        server_info=oip.server_info(),
        default_timeout_s=settings.request_timeout_s,
        max_timeout_s=settings.max_request_timeout_s,
        observer=MetricsObserver(service.metrics),
        body_memory=service.body_memory,
        tracer_provider=tracing.provider,
    )


def create_app(
    settings: Settings,
    *,
    on_fatal: FatalHandler,
    tracing: TracingConfig | None = None,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """`on_fatal` is called when the model cannot load after start-up: `python -m app` stops
    the server (the orchestrator then sees a failed container, not a live pod that never gets
    ready); tests record it. `tracing`: from the OTEL_* variables (`python -m app` reads them);
    none: off. `span_exporter`: spans go there instead (tests: the SDK's in-memory one)."""
    metrics = Metrics(model_version=settings.model_version)
    traces = Tracing(tracing or TracingConfig.off(), metrics, exporter=span_exporter)
    service = Service(settings, metrics, traces.tracer)
    served = ServedModel(service)
    # SERVING_SHADOW_URL: copies of /predict's images to the other version (None: off).
    shadow = build_shadow(settings, metrics)
    # Raw bytes, ready for constant-time comparison (HTTP and gRPC); Settings keeps them secret.
    api_keys = [k.get_secret_value().encode() for k in settings.api_keys]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Cheap and synchronous: no usable weights means start-up fails here, with the reason
        # (done already, and kept, when `python -m app` checked before binding the port).
        service.host.resolve()
        with metrics_port(settings.metrics_port, settings.host, metrics):
            grpc_server = await _grpc(settings, service, served, api_keys, traces)
            loader = asyncio.create_task(_start(service, on_fatal), name="model-load")
            try:
                yield
            finally:
                service.drain()
                if shadow is not None:
                    # Copies in flight are abandoned: they are samples, not answers.
                    await shadow.close()
                if not loader.done():
                    loader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await loader
                if grpc_server is not None:
                    # New calls get UNAVAILABLE; calls in flight finish within the grace period.
                    await grpc_server.stop(settings.graceful_timeout_s)
                await service.close(settings.graceful_timeout_s)
                # The last spans, within 2 s: a dead collector must not hold the exit up.
                await asyncio.to_thread(traces.shutdown, 2.0)

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
    app.state.service = service
    app.state.tracing = traces
    app.state.api_keys = api_keys
    app.state.shadow = shadow
    install_error_handlers(app)
    include_routes(app)
    app.include_router(oip.router(settings, served))
    if not settings.api_keys:
        document_auth_as_optional(app)
    install_middleware(
        app, default_body_limit=single_image_limit(settings), model_version=settings.model_version
    )
    instrument(app, metrics)
    if traces.provider is not None:
        # OpenTelemetry's own ASGI middleware, outside all of ours: the server span (W3C
        # traceparent honoured; a malformed one starts a new trace) is current everywhere
        # inside. Probes and /metrics are not traced.
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=traces.provider, excluded_urls="/health,/ready,/metrics"
        )
    return app
