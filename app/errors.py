"""Errors the service reports to clients: each has a stable machine-readable code and an HTTP
status. Raised anywhere in the request path (none of those modules knows HTTP beyond the number);
`app.api.errors` turns them into `{"error": {"code", "message"}}` responses.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class: `code` is part of the public API and never changes once released."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


# --- input images ---------------------------------------------------------------------------


class InvalidImageError(ServingError):
    status_code = 400
    code = "invalid_image"


class EmptyImageError(ServingError):
    status_code = 400
    code = "empty_image"


class UnsupportedImageFormatError(ServingError):
    status_code = 415
    code = "unsupported_image_format"


class UnsupportedMediaTypeError(ServingError):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLargeError(ServingError):
    status_code = 413
    code = "payload_too_large"


class ImageTooLargeError(ServingError):
    """Too many pixels: the decompression-bomb guard."""

    status_code = 413
    code = "image_too_large"


class InvalidRequestError(ServingError):
    status_code = 400
    code = "invalid_request"


class InvalidParameterError(ServingError):
    status_code = 422
    code = "invalid_parameter"


class TooManyFilesError(ServingError):
    status_code = 413
    code = "too_many_files"


# --- URL fetching ---------------------------------------------------------------------------


class InvalidUrlError(ServingError):
    status_code = 400
    code = "invalid_url"


class UrlNotAllowedError(ServingError):
    """The URL resolves to an address we refuse to contact (SSRF guard)."""

    status_code = 400
    code = "url_not_allowed"


class UrlFetchError(ServingError):
    """The remote side failed: unreachable, bad status, too many redirects."""

    status_code = 502
    code = "url_fetch_failed"


class UrlTimeoutError(ServingError):
    status_code = 504
    code = "url_fetch_timeout"


class UrlTooLargeError(ServingError):
    status_code = 413
    code = "url_content_too_large"


# --- access -------------------------------------------------------------------------------


class UnauthorizedError(ServingError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


# --- service state --------------------------------------------------------------------------


class NotReadyError(ServingError):
    status_code = 503
    code = "not_ready"


class OverloadedError(ServingError):
    status_code = 503
    code = "overloaded"


# A request whose client went away before it could be answered: not an error of ours. nginx's
# status for it, on both transports, so logs and request_count_total say what happened and the
# 5xx alerts do not count it.
CLIENT_CLOSED = 499
CLIENT_CLOSED_CODE = "client_closed_request"


class MemoryBusyError(ServingError):
    """A memory budget is full (the decode budget, held by images being decoded, or the body
    budget, held by request bodies being read), and this request's deadline passed while it
    waited for room."""

    status_code = 503
    code = "memory_busy"


class DeadlineExceededError(ServingError):
    status_code = 504
    code = "deadline_exceeded"


class InferenceError(ServingError):
    """The model itself failed: a server fault, reported without internals."""

    status_code = 500
    code = "inference_failed"
