"""The outermost layer of every HTTP request, as plain ASGI (no per-request task overhead):

- a request id: the caller's `X-Request-ID` when it is sane, else a new one; echoed back;
- the body size cap, enforced while the body streams in (Content-Length is checked up front);
- the HTTP metrics (`request_count_total`, `request_duration_seconds`, in-flight gauge) labelled
  by route template, so label values stay bounded;
- one structured access-log line per request;
- a last-resort JSON 500 if anything escapes the route's error handling.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLargeError
from app.metrics import Metrics

log = logging.getLogger("app.access")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Probes and scrapes arrive every few seconds per pod: logged at debug, counted as usual.
_QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})
UNMATCHED_ROUTE = "unmatched"


def new_request_id() -> str:
    return uuid.uuid4().hex


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        body_limit_for: Callable[[str], int],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.body_limit_for = body_limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_OK.match(incoming) else new_request_id()
        scope.setdefault("state", {}).update(request_id=request_id, started=started)
        method = scope["method"]
        limit = self.body_limit_for(scope["path"])
        status = 500
        response_started = False
        received = 0
        sent = 0

        declared = _header(scope, b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > limit

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(_too_large_message(limit))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, sent
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        state = scope["state"]
        self.metrics.requests_in_flight.inc()
        try:
            if too_large:
                status = 413
                state["error_code"] = PayloadTooLargeError.code
                await _send_json(
                    send_with_id,
                    413,
                    PayloadTooLargeError.code,
                    _too_large_message(limit),
                    request_id,
                )
            else:
                await self.app(scope, limited_receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            state["error_code"] = "internal_error"
            if not response_started:
                await _send_json(
                    send_with_id, 500, "internal_error", "internal server error", request_id
                )
            status = 500
        finally:
            self.metrics.requests_in_flight.dec()
            elapsed = time.perf_counter() - started
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or UNMATCHED_ROUTE
            self.metrics.request_count.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.request_duration.labels(method=method, route=route).observe(elapsed)
            error_code = state.get("error_code")
            if error_code:
                self.metrics.request_errors.labels(code=error_code).inc()
            level = logging.DEBUG if route in _QUIET_ROUTES and status < 400 else logging.INFO
            if log.isEnabledFor(level):
                client = scope.get("client")
                log.log(
                    level,
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000.0, 2),
                        "request_bytes": received,
                        "response_bytes": sent,
                        "client": client[0] if client else None,
                        "error_code": error_code,
                    },
                )


def _too_large_message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes (SERVING_MAX_UPLOAD_BYTES)"


async def _send_json(
    send: Callable[[Message], Any], status: int, code: str, message: str, request_id: str
) -> None:
    body = json.dumps(
        {"error": {"code": code, "message": message}, "request_id": request_id}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
