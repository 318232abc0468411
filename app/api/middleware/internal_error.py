"""The last resort: an exception no handler turned into a response becomes a JSON 500 in the
same shape as every other error (and is logged with its traceback), instead of a bare text.

A client that disconnects while its body is being read is not an error of ours: it is recorded
as nginx's 499 (client closed request), without a traceback, so the access log and
request_count_total say what happened and the 5xx alerts do not fire on it."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import send_error
from app.calls.context import context_of
from app.errors import CLIENT_CLOSED, CLIENT_CLOSED_CODE

log = logging.getLogger("app.access")


class InternalErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            context = context_of(scope)
            context.error_code = CLIENT_CLOSED_CODE
            if not started:  # nobody reads it (the server drops it); the layers above count it
                message = "the client closed the connection before its request was read"
                await send_error(send, CLIENT_CLOSED, context.error_code, message, context)
        except Exception:
            context = context_of(scope)
            log.exception("unhandled error", extra={"request_id": context.request_id})
            context.error_code = "internal_error"
            if not started:
                await send_error(send, 500, "internal_error", "internal server error", context)
