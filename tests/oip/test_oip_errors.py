"""One error mapping for both transports: the HTTP status and `{"error": ...}` body of REST,
the gRPC status code, and Retry-After carried to each."""

from __future__ import annotations

import grpc
import pytest

from app import errors
from app.oip.errors import ModelNotFoundError, describe, grpc_status_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("exc", "http", "code"),
    [
        (errors.InvalidImageError("x"), 400, INVALID),
        (errors.EmptyImageError("x"), 400, INVALID),
        (errors.InvalidRequestError("x"), 400, INVALID),
        (errors.ImageTooLargeError("x"), 413, INVALID),
        (errors.TooManyFilesError("x"), 413, INVALID),
        (errors.PayloadTooLargeError("x"), 413, INVALID),
        (errors.UnsupportedImageFormatError("x"), 415, INVALID),
        (errors.InvalidParameterError("x"), 422, INVALID),
        (errors.UnauthorizedError("x"), 401, grpc.StatusCode.UNAUTHENTICATED),
        (ModelNotFoundError("x"), 404, grpc.StatusCode.NOT_FOUND),
        (errors.NotReadyError("x"), 503, grpc.StatusCode.UNAVAILABLE),
        (errors.OverloadedError("x"), 503, grpc.StatusCode.UNAVAILABLE),
        (errors.MemoryBusyError("x"), 503, grpc.StatusCode.UNAVAILABLE),
        (errors.UrlFetchError("x"), 502, grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceededError("x"), 504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.InferenceError("x"), 500, grpc.StatusCode.INTERNAL),
    ],
)
def test_every_serving_error_maps_to_both_transports(
    exc: errors.ServingError, http: int, code: grpc.StatusCode
) -> None:
    error = describe(exc)
    assert (error.http_status, error.grpc_status) == (http, code)
    assert error.rest_body() == {"error": "x", "code": exc.code}
    assert ("error-code", exc.code) in error.grpc_trailing_metadata()


def test_retry_after_travels_as_header_and_trailing_metadata() -> None:
    error = describe(errors.OverloadedError("busy", headers={"Retry-After": "3", "X-Other": "y"}))
    assert error.headers == {"Retry-After": "3"}
    assert ("retry-after", "3") in error.grpc_trailing_metadata()


def test_unknown_exceptions_are_internal_without_details() -> None:
    error = describe(RuntimeError("secret path /srv/weights"))
    assert (error.http_status, error.grpc_status) == (500, grpc.StatusCode.INTERNAL)
    assert "secret" not in error.message


@pytest.mark.parametrize(
    ("http", "code"),
    [(418, INVALID), (451, INVALID), (507, grpc.StatusCode.INTERNAL)],
)
def test_statuses_without_an_entry_follow_their_class(http: int, code: grpc.StatusCode) -> None:
    assert grpc_status_for(http) == code
