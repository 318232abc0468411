"""A call's deadline: the one rule for every transport.

A call may ask for a timeout (HTTP's `X-Request-Timeout` header, a gRPC client's deadline);
it gets at most the server's maximum, and the server's default when it asks for none. The
deadline is absolute (time.monotonic), so every stage works to the same instant."""

from __future__ import annotations

import time

from app.errors import DeadlineExceededError, InvalidParameterError


def deadline_after(
    timeout_s: float | None, *, default_s: float, max_s: float, now: float | None = None
) -> float:
    """The absolute deadline of a call that asked for `timeout_s` seconds (None: the default).
    A timeout already spent (a gRPC deadline that passed on the way) is 504 at once."""
    timeout = default_s if timeout_s is None else min(timeout_s, max_s)
    if timeout <= 0:
        raise DeadlineExceededError("the call's deadline passed before it was served")
    return (time.monotonic() if now is None else now) + timeout


def parse_timeout(text: str, *, name: str) -> float:
    """A timeout sent as text (`name` is the header that carried it): a positive, finite
    number of seconds, else 422 `invalid_parameter`."""
    try:
        timeout = float(text)
    except ValueError:
        raise InvalidParameterError(
            f"{name} must be a number of seconds, not {text[:40]!r}"
        ) from None
    if not 0 < timeout < float("inf"):
        raise InvalidParameterError(f"{name} must be a positive number of seconds")
    return timeout
