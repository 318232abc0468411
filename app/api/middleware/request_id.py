"""The request id: the caller's `X-Request-ID` when it is sane, else a new one. Bound to the
request's context for everything inside, and echoed on the response."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.context import RequestContext, bind

# Letters, digits and a few separators, at most 128: an id is logged and echoed, so anything
# else (a key pasted by mistake, control characters, a huge value) is replaced, not repeated.
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(incoming: str | None) -> str:
    """The caller's id when it is sane, else a new one (HTTP header or gRPC metadata)."""
    return incoming if incoming and _REQUEST_ID_OK.match(incoming) else new_request_id()


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = accept_request_id(incoming)
        bind(scope, RequestContext(request_id=request_id))
        echoed = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), echoed]}
            await send(message)

        await self.app(scope, receive, send_with_id)
