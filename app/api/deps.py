"""Typed dependencies: what a route needs, taken from the app and the request in one place.

Resolved in this order for a prediction route (FastAPI runs a route's `dependencies` first):
the API key (protected router) -> the body (`single_image_body` / `batch_body`: its cap, then its
memory reserved within the request's deadline) -> `Admitted` (admission, before a byte of the
body is read) -> the input (`ImageInput`, `Uploads`), which reads the body.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.admission import Ticket
from app.api.context import request_context
from app.api.middleware.body_limit import too_large
from app.body_memory import BATCH_HELD, PROTOCOL_HELD, SINGLE_IMAGE_HELD, BodyMemory
from app.config import Settings
from app.errors import (
    InvalidParameterError,
    InvalidRequestError,
    PayloadTooLargeError,
    TooManyFilesError,
    UnsupportedMediaTypeError,
)
from app.host import ModelHost
from app.imaging import SUPPORTED_MEDIA_TYPES
from app.metrics import Metrics
from app.pipeline import RequestPipeline
from app.service import Service

from .schemas import UrlRequest

# Multipart framing and the `url` field on top of the image itself.
BODY_OVERHEAD = 64 * 1024
# Part/body content types taken as "an image, sniff it": browsers and curl send these.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
MULTIPART = "multipart/form-data"
JSON = "application/json"


# --- the app's parts ----------------------------------------------------------------------------


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


# Dependencies are `async def` although none of them awaits: FastAPI runs a plain `def`
# dependency on its worker threads, a round trip to another thread (and the GIL) for every one of
# them on every request; these only read attributes (bench/profile_request.py measured it).


async def _settings(request: Request) -> Settings:
    return _service(request).settings


async def _host(request: Request) -> ModelHost:
    return _service(request).host


async def _pipeline(request: Request) -> RequestPipeline:
    return _service(request).pipeline


async def _metrics(request: Request) -> Metrics:
    return _service(request).metrics


async def _body_memory(request: Request) -> BodyMemory:
    return _service(request).body_memory


SettingsDep = Annotated[Settings, Depends(_settings)]
HostDep = Annotated[ModelHost, Depends(_host)]
PipelineDep = Annotated[RequestPipeline, Depends(_pipeline)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
BodyMemoryDep = Annotated[BodyMemory, Depends(_body_memory)]


# --- body caps, declared per route ----------------------------------------------------------


def single_image_limit(settings: Settings) -> int:
    return settings.max_upload_bytes + BODY_OVERHEAD


def batch_limit(settings: Settings) -> int:
    return settings.max_upload_bytes * settings.max_batch_files + BODY_OVERHEAD


def protocol_limit(settings: Settings) -> int:
    """An Open Inference Protocol call carries a batch's worth of images; in plain JSON they
    are base64 (4 bytes for every 3), with the binary extension raw."""
    return 4 * -(-settings.max_upload_bytes * settings.max_batch_files // 3) + BODY_OVERHEAD


def body_limit(
    limit_for: Callable[[Settings], int], held_per_byte: float
) -> Callable[[Request, Settings, BodyMemory], AsyncIterator[None]]:
    """A route dependency for its body: the cap (enforced by the body-limit middleware while
    the body streams in, and checked against Content-Length before anything else is done), then
    the memory the body will hold, reserved from the body budget before a byte is read and given
    back once the route has answered."""

    async def declare(
        request: Request, settings: SettingsDep, memory: BodyMemoryDep
    ) -> AsyncIterator[None]:
        limit = limit_for(settings)
        request_context(request).body_limit = limit
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else limit  # chunked: at most the cap
        if size > limit:
            raise too_large(limit)
        deadline = request_deadline(request, settings)
        reserved = await memory.reserve(math.ceil(size * held_per_byte), deadline)
        try:
            yield
        finally:
            memory.release(reserved)

    return declare


single_image_body = Depends(body_limit(single_image_limit, SINGLE_IMAGE_HELD), scope="function")
batch_body = Depends(body_limit(batch_limit, BATCH_HELD), scope="function")
protocol_body = Depends(body_limit(protocol_limit, PROTOCOL_HELD), scope="function")


# --- admission ----------------------------------------------------------------------------------

RequestTimeout = Annotated[
    str | None,
    Header(
        alias="X-Request-Timeout",
        description=(
            "Seconds this request may take, end to end (default SERVING_REQUEST_TIMEOUT_S, at "
            "most SERVING_MAX_REQUEST_TIMEOUT_S). A request that cannot make it is refused at "
            "once with 503 and Retry-After, or answered 504 if its time runs out in the queue."
        ),
    ),
]

TopK = Annotated[
    int | None,
    Query(ge=1, le=20, description="How many classes to return (1-20); default SERVING_TOP_K."),
]


def deadline_from(settings: Settings, header: str | None, *, now: float | None = None) -> float:
    """Absolute deadline (time.monotonic) from a timeout in seconds, or the default."""
    timeout = settings.request_timeout_s
    if header is not None:
        try:
            timeout = float(header)
        except ValueError:
            raise InvalidParameterError(
                f"X-Request-Timeout must be a number of seconds, not {header[:40]!r}"
            ) from None
        if not 0 < timeout < float("inf"):
            raise InvalidParameterError("X-Request-Timeout must be a positive number of seconds")
        timeout = min(timeout, settings.max_request_timeout_s)
    return (time.monotonic() if now is None else now) + timeout


def request_deadline(request: Request, settings: Settings) -> float:
    """The request's absolute deadline, fixed the first time something asks (the body budget's
    wait, admission, the protocol's handler), so all of them work to the same one."""
    context = request_context(request)
    if context.deadline is None:
        context.deadline = deadline_from(settings, request.headers.get("x-request-timeout"))
    return context.deadline


@dataclass(frozen=True)
class Call:
    """An admitted prediction request: its ticket (deadline, images held), top-k, and id."""

    ticket: Ticket
    top_k: int
    request_id: str
    started: float


async def _admitted(
    request: Request, settings: SettingsDep, top_k: TopK = None, timeout: RequestTimeout = None
) -> AsyncIterator[Call]:
    """The deadline, then admission, before the body is read: a request that cannot be served
    in time costs nothing but this. The ticket is given back when the route returns."""
    del timeout  # declared for the OpenAPI document; request_deadline reads the header
    ticket = _service(request).admission.admit(request_deadline(request, settings))
    context = request_context(request)
    try:
        yield Call(ticket, top_k or settings.top_k, context.request_id, context.started)
    finally:
        ticket.release()


Admitted = Annotated[Call, Depends(_admitted, scope="function")]


# --- inputs -------------------------------------------------------------------------------------


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _check_part_type(content_type: str | None) -> None:
    media = media_type(content_type)
    if media in GENERIC_TYPES or media.startswith("image/"):
        return
    raise UnsupportedMediaTypeError(
        f"content type {media!r} is not an image; send {', '.join(SUPPORTED_MEDIA_TYPES)}"
    )


async def read_form(request: Request, *, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=16, max_part_size=16 * 1024)
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            raise TooManyFilesError(
                f"too many files in one request; the limit is {max_files} (SERVING_MAX_BATCH_FILES)"
            ) from exc
        raise InvalidRequestError(f"malformed multipart body: {detail}") from exc


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    _check_part_type(upload.content_type)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"the image is larger than {limit} bytes (SERVING_MAX_UPLOAD_BYTES)"
        )
    return data


def _url_from_json(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from exc
    try:
        return UrlRequest.model_validate(payload).url
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidParameterError(
            f'expected {{"url": "https://..."}}; {where}: {first["msg"]}'
        ) from None


@dataclass(frozen=True)
class ImageRef:
    """One image to classify: its bytes, or the URL to fetch them from."""

    data: bytes | None = None
    url: str | None = None


async def _image_input(request: Request, settings: SettingsDep, call: Admitted) -> ImageRef:
    """One image from a multipart upload (`file` or `url`), JSON `{"url": ...}` or a raw
    image body. Depends on `Admitted` so admission comes before the body is read."""
    media = media_type(request.headers.get("content-type"))
    if media == MULTIPART:
        form = await read_form(request, max_files=1)
        upload, url = form.get("file"), form.get("url")
        if isinstance(upload, UploadFile) and isinstance(url, str):
            raise InvalidRequestError("send either a file or a url, not both")
        if isinstance(upload, UploadFile):
            return ImageRef(data=await read_upload(upload, settings.max_upload_bytes))
        if isinstance(url, str):
            return ImageRef(url=url)
        raise InvalidRequestError("the multipart body needs a field `file` (image) or `url`")
    if media == JSON:
        return ImageRef(url=_url_from_json(await request.body()))
    if media.startswith("image/") or media in GENERIC_TYPES - {""}:
        return ImageRef(data=await request.body())
    raise UnsupportedMediaTypeError(
        f"content type {media or 'none'!r} is not accepted; use multipart/form-data, "
        "application/json or an image/* type"
    )


ImageInput = Annotated[ImageRef, Depends(_image_input)]


async def _uploads(request: Request, settings: SettingsDep, call: Admitted) -> list[UploadFile]:
    """Multipart field `files`, repeated; the ticket grows to the number of files (admission
    for the rest of them, now that their count is known)."""
    if media_type(request.headers.get("content-type")) != MULTIPART:
        raise UnsupportedMediaTypeError(
            "send the images as multipart/form-data, field `files` (repeated)"
        )
    form = await read_form(request, max_files=settings.max_batch_files)
    uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile)]
    if not uploads:
        raise InvalidRequestError("the multipart body needs one or more `files` fields")
    call.ticket.extend(len(uploads) - 1)
    return uploads


Uploads = Annotated[list[UploadFile], Depends(_uploads)]
