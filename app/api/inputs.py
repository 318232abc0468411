"""Reading a prediction request's input: one image (multipart `file` or `url`, JSON
`{"url": ...}`, or a raw image body), or a batch's uploads (multipart `files`). Every malformed
input is a ServingError with its stable code."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from app.api.schemas import UrlRequest
from app.errors import (
    InvalidParameterError,
    InvalidRequestError,
    PayloadTooLargeError,
    TooManyFilesError,
    UnsupportedMediaTypeError,
)
from app.images.decode import SUPPORTED_MEDIA_TYPES

# Part/body content types taken as "an image, sniff it": browsers and curl send these.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
MULTIPART = "multipart/form-data"
JSON = "application/json"


@dataclass(frozen=True)
class ImageRef:
    """One image to classify: its bytes, or the URL to fetch them from."""

    data: bytes | None = None
    url: str | None = None


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


async def read_image(request: Request, max_upload_bytes: int) -> ImageRef:
    """One image from a multipart upload (`file` or `url`), JSON `{"url": ...}` or a raw
    image body."""
    media = media_type(request.headers.get("content-type"))
    if media == MULTIPART:
        form = await read_form(request, max_files=1)
        upload, url = form.get("file"), form.get("url")
        if isinstance(upload, UploadFile) and isinstance(url, str):
            raise InvalidRequestError("send either a file or a url, not both")
        if isinstance(upload, UploadFile):
            return ImageRef(data=await read_upload(upload, max_upload_bytes))
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


async def read_uploads(request: Request, max_files: int) -> list[UploadFile]:
    """Multipart field `files`, repeated (each file is read, and checked, on its own)."""
    if media_type(request.headers.get("content-type")) != MULTIPART:
        raise UnsupportedMediaTypeError(
            "send the images as multipart/form-data, field `files` (repeated)"
        )
    form = await read_form(request, max_files=max_files)
    uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile)]
    if not uploads:
        raise InvalidRequestError("the multipart body needs one or more `files` fields")
    return uploads
