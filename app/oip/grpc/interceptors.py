"""What every gRPC call of the protocol goes through besides its own work: the API key, the
deadline, the request id, the metrics and the access log line.

Metrics reuse the HTTP families (`request_count_total`, `request_duration_seconds`,
`requests_in_flight`, `request_errors_total`) with method `GRPC`, the full method name as the
route (`/inference.GRPCInferenceService/ModelInfer`) and the HTTP status the error maps to
(200 for OK), so dashboards and alerts on 5xx rates count both transports.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any, Protocol

from app.api.auth import key_matches
from app.api.middleware.request_id import accept_request_id
from app.errors import DeadlineExceededError, UnauthorizedError
from app.metrics import Metrics

log = logging.getLogger("app.access")

METHOD_LABEL = "GRPC"
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


class CallObserver(Protocol):
    """Told when a call starts and how it ended."""

    def started(self, route: str) -> None: ...

    def finished(self, route: str, status: int, seconds: float, error_code: str | None) -> None:
        """`status` is the HTTP status of the outcome (200, 400, 503, ...)."""
        ...


class MetricsObserver:
    """Records calls in the app's HTTP metric families (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def started(self, route: str) -> None:
        self.metrics.requests_in_flight.inc()

    def finished(self, route: str, status: int, seconds: float, error_code: str | None) -> None:
        m = self.metrics
        m.requests_in_flight.dec()
        m.request_count.labels(method=METHOD_LABEL, route=route, status=str(status)).inc()
        m.request_duration.labels(method=METHOD_LABEL, route=route).observe(seconds)
        if error_code:
            m.request_errors.labels(code=error_code).inc()


def metadata_value(metadata: Sequence[Any] | None, key: str) -> str | None:
    """The last value of a (lower-case) metadata key, as text."""
    found = None
    for item in metadata or ():
        name, value = item[0], item[1]
        if name == key:
            found = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return found


def authenticate(metadata: Sequence[Any] | None, keys: Sequence[bytes]) -> None:
    """`authorization: Bearer <key>` or `x-api-key: <key>`, compared in constant time against
    every key (app.api.auth); no keys configured: every call passes."""
    if not keys:
        return
    bearer = metadata_value(metadata, "authorization")
    match = _BEARER.match(bearer) if bearer is not None else None
    candidate = match.group(1) if match else metadata_value(metadata, "x-api-key")
    if not candidate:
        raise UnauthorizedError(
            "an API key is required: send metadata `authorization: Bearer <key>` or "
            "`x-api-key: <key>`"
        )
    if not key_matches(candidate, list(keys)):
        raise UnauthorizedError("the API key is not valid")


def call_deadline(
    time_remaining: float | None, default_timeout_s: float, max_timeout_s: float
) -> float:
    """The absolute deadline (time.monotonic) of a call: the client's gRPC deadline, at most
    the server's maximum; without one, the server's default."""
    timeout = default_timeout_s if time_remaining is None else min(time_remaining, max_timeout_s)
    if timeout <= 0:
        raise DeadlineExceededError("the call's deadline passed before it was served")
    return time.monotonic() + timeout


def request_id(metadata: Sequence[Any] | None) -> str:
    """The caller's `x-request-id` by the same rule as HTTP's header, else a new one."""
    return accept_request_id(metadata_value(metadata, "x-request-id"))


def log_call(
    *,
    request_id: str,
    route: str,
    status: int,
    seconds: float,
    error_code: str | None,
    grpc_status: str,
    quiet: bool,
    client: str | None,
) -> None:
    """One access-log line per call, as the HTTP middleware writes one per request; health
    calls that succeed (probes) at debug level."""
    level = logging.DEBUG if quiet and status < 400 else logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level,
            "request",
            extra={
                "request_id": request_id,
                "method": METHOD_LABEL,
                "route": route,
                "status": status,
                "grpc_status": grpc_status,
                "duration_ms": round(seconds * 1000.0, 2),
                "client": client,
                "error_code": error_code,
            },
        )
