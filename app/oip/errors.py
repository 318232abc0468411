"""One mapping from the service's errors to the Open Inference Protocol's: the HTTP status and
`{"error": "<message>"}` body of the REST API, and the status code of the gRPC API.

Every error the request path raises is an `app.errors.ServingError` (stable `code`, HTTP
`status_code`, `message`, `headers`); the protocol's own validation raises the same classes.
Anything else is a server fault: reported as a generic internal error, never with internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from app.errors import ServingError


class ModelNotFoundError(ServingError):
    """The request names a model or version this server does not serve."""

    status_code = 404
    code = "model_not_found"


INTERNAL_CODE = "internal_error"
INTERNAL_MESSAGE = "internal server error"

# The protocol's status per HTTP status. 4xx that are the caller's input (malformed request,
# too large, wrong media type, invalid parameter) are all INVALID_ARGUMENT, as Triton reports
# them; 502 (an upstream the server depends on failed) is transient like 503.
_GRPC_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Only these response headers have a meaning to carry into the protocol's error.
_KEPT_HEADERS = ("Retry-After", "WWW-Authenticate")


def grpc_status_for(http_status: int) -> grpc.StatusCode:
    known = _GRPC_BY_HTTP.get(http_status)
    if known is not None:
        return known
    return grpc.StatusCode.INVALID_ARGUMENT if http_status < 500 else grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class ProtocolError:
    """An error as both transports report it."""

    http_status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return grpc_status_for(self.http_status)

    def rest_body(self) -> dict[str, str]:
        """The protocol's error object; `code` is this service's stable error code, an extra
        field that clients of the protocol ignore."""
        return {"error": self.message, "code": self.code}

    def grpc_trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Trailing metadata of the failed call: the stable code, and Retry-After when the
        error is temporary (gRPC metadata keys are lower case)."""
        items = [("error-code", self.code)]
        retry_after = self.headers.get("Retry-After")
        if retry_after is not None:
            items.append(("retry-after", retry_after))
        return tuple(items)


def describe(exc: BaseException) -> ProtocolError:
    """The protocol error for any exception raised while serving a request."""
    if isinstance(exc, ServingError):
        headers = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}
        return ProtocolError(exc.status_code, exc.code, exc.message, headers)
    return ProtocolError(500, INTERNAL_CODE, INTERNAL_MESSAGE)
