"""Request bodies: each route's cap, and the memory its body will hold.

The cap is enforced by the body-limit middleware while the body streams in, and checked against
Content-Length before anything else is done. The memory (Content-Length times the route's
measured factor, app/memory/bodies.py) is reserved from the body budget before a byte is read,
and given back once the route has answered."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.requests import Request

from app.api.middleware.body_limit import too_large
from app.calls.context import request_context
from app.memory.bodies import BodyMemory
from app.settings.config import Settings

# Multipart framing and the `url` field on top of the image itself.
BODY_OVERHEAD = 64 * 1024


def single_image_limit(settings: Settings) -> int:
    return settings.max_upload_bytes + BODY_OVERHEAD


def batch_limit(settings: Settings) -> int:
    return settings.max_upload_bytes * settings.max_batch_files + BODY_OVERHEAD


def protocol_limit(settings: Settings) -> int:
    """An Open Inference Protocol call carries a batch's worth of images; in plain JSON they
    are base64 (4 bytes for every 3), with the binary extension raw."""
    return 4 * -(-settings.max_upload_bytes * settings.max_batch_files // 3) + BODY_OVERHEAD


@asynccontextmanager
async def body_held(
    request: Request,
    *,
    limit: int,
    held_per_byte: float,
    memory: BodyMemory,
    deadline: Callable[[], float],
) -> AsyncIterator[None]:
    """The route's cap declared (the middleware reads it), a declared length over it refused
    at once (413), then the body's memory reserved within the request's deadline (503
    `memory_busy` when it cannot be had in time) until the block ends."""
    request_context(request).body_limit = limit
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else limit  # chunked: at most the cap
    if size > limit:
        raise too_large(limit)
    reserved = await memory.reserve(math.ceil(size * held_per_byte), deadline())
    try:
        yield
    finally:
        memory.release(reserved)
