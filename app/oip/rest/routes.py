"""The Open Inference Protocol's REST API as a FastAPI router: health, metadata and inference
under /v2, with or without `/versions/{model_version}`.

Every error on these routes, including those of dependencies the app adds (API keys) and of
the body size limit, leaves in the protocol's shape, `{"error": "..."}`, through the route
class below; the rest of the app keeps its own error shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.cache.policy import from_cache_control
from app.calls.context import request_context
from app.errors import InvalidRequestError, ServingError, UnsupportedMediaTypeError
from app.oip import handler
from app.oip.errors import ProtocolError, describe
from app.oip.handler import ServerInfo
from app.oip.model import OipModel
from app.oip.rest.codec import (
    BINARY_TYPE,
    INFERENCE_HEADER,
    JSON_TYPE,
    decode_request,
    encode_response,
)
from app.oip.rest.schemas import (
    ErrorBody,
    InferRequest,
    InferResponse,
    LiveResponse,
    ModelMetadata,
    ModelReadyResponse,
    ReadyResponse,
    ServerMetadata,
    TensorMetadata,
    inline_schema,
)
from app.oip.tensors import Limits

log = logging.getLogger(__name__)

TAG = "open inference protocol"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request, wrong datatype or shape."},
    401: {"model": ErrorBody, "description": "API key missing or invalid."},
    404: {"model": ErrorBody, "description": "Unknown model or version."},
    503: {"model": ErrorBody, "description": "Not ready or overloaded; see Retry-After."},
}
_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    413: {"model": ErrorBody, "description": "Too many images, or an image or body too large."},
    415: {"model": ErrorBody, "description": "Unsupported image format or content encoding."},
    504: {"model": ErrorBody, "description": "The deadline passed."},
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON_TYPE: {"schema": inline_schema(InferRequest)},
            BINARY_TYPE: {
                "schema": {"type": "string", "format": "binary"},
                "description": f"JSON header ({INFERENCE_HEADER} bytes), then raw inputs.",
            },
        },
    }
}

# Headers of the inference routes (module level: FastAPI resolves annotations from globals).
Hdr = Annotated[
    str | None,
    Header(
        alias=INFERENCE_HEADER,
        description="Binary tensor data extension: length of the JSON header of the body.",
    ),
]
Enc = Annotated[str | None, Header(alias="Content-Encoding", include_in_schema=False)]


def error_response(request: Request, error: ProtocolError) -> JSONResponse:
    # The access log and request_errors_total read the code from the request's context.
    request_context(request).error_code = error.code
    return JSONResponse(error.rest_body(), status_code=error.http_status, headers=error.headers)


def _tensor(meta: handler.TensorMetadata) -> TensorMetadata:
    return TensorMetadata(name=meta.name, datatype=meta.datatype, shape=list(meta.shape))


class OipRoute(APIRoute):
    """Renders every failure of the route, dependencies included, as a protocol error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        route_handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await route_handler(request)
            except ClientDisconnect:
                raise
            except RequestValidationError as exc:
                message = "; ".join(str(e.get("msg", "invalid")) for e in exc.errors())
                return error_response(request, describe(InvalidRequestError(message)))
            except StarletteHTTPException as exc:
                error = ProtocolError(exc.status_code, f"http_{exc.status_code}", str(exc.detail))
                return error_response(request, error)
            except ServingError as exc:
                return error_response(request, describe(exc))
            except Exception as exc:
                log.exception("open inference protocol route failed")
                return error_response(request, describe(exc))

        return guarded


def oip_router(
    get_model: Callable[[Request], OipModel],
    *,
    get_deadline: Callable[[Request], float],
    limits: Limits,
    server: ServerInfo,
    protected: Sequence[Depends] = (),
    infer_dependencies: Sequence[Depends] = (),
) -> APIRouter:
    """The /v2 routes. `get_deadline` gives a request's absolute deadline (time.monotonic);
    `protected` are dependencies of every route but the health checks (API keys);
    `infer_dependencies` are added to the inference routes (the body size cap)."""
    router = APIRouter(route_class=OipRoute, tags=[TAG])
    guarded = list(protected)

    def ready_response(body: dict[str, Any], ready: bool) -> JSONResponse:
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/v2/health/live", response_model=LiveResponse, summary="Server live")
    async def server_live() -> LiveResponse:
        return LiveResponse(live=True)

    @router.get(
        "/v2/health/ready",
        response_model=ReadyResponse,
        summary="Server ready",
        responses={503: {"model": ReadyResponse, "description": "Not ready."}},
    )
    async def server_ready(request: Request) -> JSONResponse:
        ready = get_model(request).is_ready()
        return ready_response({"ready": ready}, ready)

    @router.get(
        "/v2",
        response_model=ServerMetadata,
        summary="Server metadata",
        dependencies=guarded,
        responses={401: _ERRORS[401]},
    )
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(
            name=server.name, version=server.version, extensions=list(server.extensions)
        )

    def metadata(request: Request, name: str, version: str) -> ModelMetadata:
        meta = handler.model_metadata(get_model(request), name, version)
        return ModelMetadata(
            name=meta.name,
            versions=list(meta.versions),
            platform=meta.platform,
            inputs=[_tensor(t) for t in meta.inputs],
            outputs=[_tensor(t) for t in meta.outputs],
        )

    def model_ready(request: Request, name: str, version: str) -> JSONResponse:
        ready = handler.model_ready(get_model(request), name, version)
        return ready_response({"name": name, "ready": ready}, ready)

    async def infer(
        request: Request, name: str, version: str, header: str | None, encoding: str | None
    ) -> Response:
        model = get_model(request)
        handler.resolve(model, name, version)
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            raise UnsupportedMediaTypeError(
                f"Content-Encoding {encoding[:40]!r} is not supported; send the body as is"
            )
        deadline = get_deadline(request)
        body = await request.body()
        parsed, binary_default = decode_request(
            body, header, model=model, model_name=name, model_version=version, limits=limits
        )
        cache = from_cache_control(request.headers.get("cache-control"))
        result = await handler.infer(model, parsed, deadline, cache)
        content, headers = encode_response(result, parsed.outputs, binary_default)
        return Response(content, headers=headers)

    meta_args: dict[str, Any] = {
        "response_model": ModelMetadata,
        "dependencies": guarded,
        "responses": _ERRORS,
    }
    ready_args: dict[str, Any] = {
        "response_model": ModelReadyResponse,
        "responses": {404: _ERRORS[404], 503: {"model": ModelReadyResponse}},
    }
    infer_args: dict[str, Any] = {
        "dependencies": [*guarded, *infer_dependencies],
        "response_class": Response,
        "responses": {
            200: {
                "model": InferResponse,
                "content": {BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                "description": f"JSON, or with binary outputs a JSON header ({INFERENCE_HEADER} "
                "bytes) followed by the raw outputs.",
            },
            **_INFER_ERRORS,
        },
        "openapi_extra": _INFER_BODY,
    }

    @router.get("/v2/models/{model_name}", summary="Model metadata", **meta_args)
    async def model_metadata(request: Request, model_name: str) -> ModelMetadata:
        return metadata(request, model_name, "")

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}",
        summary="Model metadata (one version)",
        **meta_args,
    )
    async def version_metadata(
        request: Request, model_name: str, model_version: str
    ) -> ModelMetadata:
        return metadata(request, model_name, model_version)

    @router.get("/v2/models/{model_name}/ready", summary="Model ready", **ready_args)
    async def model_ready_route(request: Request, model_name: str) -> JSONResponse:
        return model_ready(request, model_name, "")

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}/ready",
        summary="Model ready (one version)",
        **ready_args,
    )
    async def version_ready(request: Request, model_name: str, model_version: str) -> JSONResponse:
        return model_ready(request, model_name, model_version)

    @router.post("/v2/models/{model_name}/infer", summary="Inference", **infer_args)
    async def model_infer(
        request: Request, model_name: str, header: Hdr = None, encoding: Enc = None
    ) -> Response:
        return await infer(request, model_name, "", header, encoding)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/infer",
        summary="Inference (one version)",
        **infer_args,
    )
    async def version_infer(
        request: Request,
        model_name: str,
        model_version: str,
        header: Hdr = None,
        encoding: Enc = None,
    ) -> Response:
        return await infer(request, model_name, model_version, header, encoding)

    return router
