"""`X-Model-Version` on every response: the version this process serves (SERVING_MODEL_VERSION),
so a client, or a router splitting traffic between two versions, sees which one answered, on
successes, errors and probes alike."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-model-version"


class ModelVersionMiddleware:
    def __init__(self, app: ASGIApp, *, model_version: str) -> None:
        self.app = app
        self.header = (HEADER, model_version.encode("ascii"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_version)
