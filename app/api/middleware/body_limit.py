"""The request body cap, enforced while the body streams in, so a chunked upload without a
Content-Length cannot grow past it either. The cap is the route's own when it declares one
(app/api/deps.py `body_limit`, which also checks Content-Length up front), else the default
(one image plus multipart framing)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.calls.context import context_of
from app.errors import PayloadTooLargeError


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than {limit} bytes (SERVING_MAX_UPLOAD_BYTES)"
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, default_limit: int) -> None:
        self.app = app
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = context_of(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                # Read on every chunk: the route's dependency may have set its cap meanwhile.
                limit = context.body_limit or self.default_limit
                if received > limit:
                    # Raised inside the route's body read: its error handler answers 413.
                    raise too_large(limit)
            return message

        await self.app(scope, limited_receive, send)
