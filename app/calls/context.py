"""What one HTTP request carries between the middleware, the dependencies, the routes and the
error handlers: one typed object in the ASGI scope's state, instead of loose keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import Scope

_KEY = "request_context"


@dataclass
class RequestContext:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    # The stable error code of an error response (access log, request_errors_total).
    error_code: str | None = None
    # The body cap: the middleware's default until the route declares its own (deps.py).
    body_limit: int | None = None
    # The absolute deadline (time.monotonic), once something has asked (deps.request_deadline).
    deadline: float | None = None


def bind(scope: Scope, context: RequestContext) -> None:
    scope.setdefault("state", {})[_KEY] = context


def context_of(scope: Scope) -> RequestContext:
    """The request's context; a fresh one (with no id) for a scope the middleware never saw,
    such as a test calling a handler directly."""
    context = scope.setdefault("state", {}).get(_KEY)
    if not isinstance(context, RequestContext):
        context = RequestContext(request_id="")
        bind(scope, context)
    return context


def request_context(connection: HTTPConnection) -> RequestContext:
    return context_of(connection.scope)
