"""Every error leaves as `{"error": {"code", "message"}, "request_id"}` with a stable code."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ServingError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "too_many_requests",
    503: "not_ready",
}


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def error_payload(code: str, message: str, request_id: str | None) -> dict[str, object]:
    return {"error": {"code": code, "message": message}, "request_id": request_id}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error response; also records the code for the access log and metrics."""
    state = request.scope.setdefault("state", {})
    state["error_code"] = code
    request_id = request_id_of(request)
    return JSONResponse(
        error_payload(code, message, request_id), status_code=status, headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors():
        loc = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{loc or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request parameters"


def install_error_handlers(app: FastAPI) -> None:
    async def serving_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServingError)
        return error_response(request, exc.status_code, exc.code, exc.message, exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, 422, "invalid_parameter", _describe_validation(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))

    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
