"""One structured access-log line per request (logger `app.access`): route template, status,
duration, bytes each way, the error code. Never headers or bodies: they may carry keys."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.calls.context import context_of

log = logging.getLogger("app.access")

# Probes and scrapes arrive every few seconds per pod: logged at debug unless they fail.
_QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})
UNMATCHED_ROUTE = "unmatched"


def route_of(scope: Scope) -> str:
    """The matched route's template (bounded), or `unmatched`."""
    return getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        received = 0
        sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = route_of(scope)
            level = logging.DEBUG if route in _QUIET_ROUTES and status < 400 else logging.INFO
            if log.isEnabledFor(level):
                context = context_of(scope)
                client = scope.get("client")
                log.log(
                    level,
                    "request",
                    extra={
                        "request_id": context.request_id,
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - context.started) * 1000.0, 2),
                        "request_bytes": received,
                        "response_bytes": sent,
                        "client": client[0] if client else None,
                        "error_code": context.error_code,
                    },
                )
