"""The HTTP middleware, one job each, and the order they wrap the app in (outermost first):

    HTTP metrics (app/api/http_metrics.py) -> model version -> request id -> access log ->
    last-resort 500 -> body cap -> FastAPI (routing, dependencies, error handlers, routes)

Metrics and the access log sit outside the last-resort handler so a 500 it produces is counted
and logged; the request id sits outside the access log so the line carries it; the model
version header goes on every response that leaves, whichever layer made it.
"""

from __future__ import annotations

from fastapi import FastAPI

from .access_log import UNMATCHED_ROUTE, AccessLogMiddleware, route_of
from .body_limit import BodyLimitMiddleware
from .internal_error import InternalErrorMiddleware
from .model_version import ModelVersionMiddleware
from .request_id import RequestIdMiddleware

__all__ = [
    "UNMATCHED_ROUTE",
    "install_middleware",
    "route_of",
]


def install_middleware(app: FastAPI, *, default_body_limit: int, model_version: str) -> None:
    # Starlette wraps in reverse order of addition: the last one added is the outermost.
    app.add_middleware(BodyLimitMiddleware, default_limit=default_body_limit)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(ModelVersionMiddleware, model_version=model_version)
