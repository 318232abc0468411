"""What every gRPC call of the protocol goes through besides its own work, as grpc.aio server
interceptors (the way KServe's model server layers its gRPC calls), outermost first:

    CallOutcome (request id, error mapping, metrics, access log) -> ModelVersion -> Drain ->
    ApiKey -> the handler

ModelVersion sends `x-model-version: <SERVING_MODEL_VERSION>` as the initial metadata of every
call, refusals and errors included, once the call is answered: a client behind a router that
splits traffic between two versions sees which one answered (HTTP's `X-Model-Version` header).

Metrics reuse the HTTP families (`request_count_total`, `request_duration_seconds`,
`requests_in_flight`, `request_errors_total`) with method `GRPC`, the full method name as the
route (`/inference.GRPCInferenceService/ModelInfer`) and the HTTP status the error maps to
(200 for OK), so dashboards and alerts on 5xx rates count both transports.

Open methods (the health calls: ServerLive, ServerReady, ModelReady) need no API key, as the
HTTP probes need none, and are answered while draining (they say "not ready"); the others need
a key when keys are configured and are refused with UNAVAILABLE once draining has begun.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol

import grpc

from app.calls.api_keys import check_api_key
from app.calls.ids import accept_request_id
from app.errors import CLIENT_CLOSED, CLIENT_CLOSED_CODE, NotReadyError, ServingError
from app.oip.errors import describe
from app.telemetry.metrics import Metrics
from app.telemetry.spans import annotate, exemplar

log = logging.getLogger("app.access")
fault_log = logging.getLogger(__name__)

METHOD_LABEL = "GRPC"
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


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
        m.request_duration.labels(method=METHOD_LABEL, route=route).observe(
            seconds, exemplar=exemplar()
        )
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


class _UnaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each unary-unary behavior in `around`; other handlers pass untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Behavior = handler.unary_unary
        method: str = details.method

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.around(method, request, context, inner)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def around(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        raise NotImplementedError


class CallOutcome(_UnaryInterceptor):
    """The request id (the caller's `x-request-id` by HTTP's rule, else a new one, sent back in
    the trailing metadata), every error turned into its gRPC status with the same code and
    message as HTTP's, the metrics and one access-log line per call (successful health calls
    at debug level, as the HTTP probes')."""

    def __init__(self, observer: CallObserver | None, open_methods: Collection[str]) -> None:
        self.observer = observer
        self.open_methods = frozenset(open_methods)

    async def around(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        started = time.perf_counter()
        rid = accept_request_id(metadata_value(context.invocation_metadata(), "x-request-id"))
        annotate(**{"request.id": rid})
        status, error_code, grpc_status = 200, None, grpc.StatusCode.OK
        if self.observer is not None:
            self.observer.started(method)
        try:
            try:
                response = await inner(request, context)
                context.set_trailing_metadata((("x-request-id", rid),))
                return response
            except Exception as exc:
                if not isinstance(exc, ServingError):
                    fault_log.exception("gRPC %s failed", method, extra={"request_id": rid})
                error = describe(exc)
                status, error_code, grpc_status = error.http_status, error.code, error.grpc_status
                annotate(**{"app.error.code": error.code})
                trailing = (*error.grpc_trailing_metadata(), ("x-request-id", rid))
                await context.abort(grpc_status, error.message, trailing_metadata=trailing)
                raise  # abort raises; this line only tells the type checker
        except asyncio.CancelledError:
            # The client went away, or its deadline passed, while the call was running.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            status = 504 if expired else CLIENT_CLOSED
            error_code = "deadline_exceeded" if expired else CLIENT_CLOSED_CODE
            grpc_status = (
                grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            )
            raise
        finally:
            seconds = time.perf_counter() - started
            if self.observer is not None:
                self.observer.finished(method, status, seconds, error_code)
            _log_call(
                request_id=rid,
                route=method,
                status=status,
                seconds=seconds,
                error_code=error_code,
                grpc_status=grpc_status.name,
                quiet=method in self.open_methods,
                client=context.peer(),
            )


class ModelVersion(_UnaryInterceptor):
    """`x-model-version` in the initial metadata of every call (see the module docstring)."""

    def __init__(self, model_version: str) -> None:
        self.metadata = (("x-model-version", model_version),)

    async def around(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        # Sent once the call has its answer or its error (CallOutcome aborts with it next), not
        # when it starts: a router in front (the chart's nginx) can still retry a call whose
        # server died before sending anything, never one whose headers it has passed on.
        try:
            response = await inner(request, context)
        except Exception:
            await context.send_initial_metadata(self.metadata)
            raise
        await context.send_initial_metadata(self.metadata)
        return response


class Drain(_UnaryInterceptor):
    """Counts the calls in flight; once `start` is called, refuses new calls of every method
    but the open ones with UNAVAILABLE (clients retry those elsewhere; gRPC's own graceful stop
    would answer CANCELLED, which they do not retry), and `wait_idle` waits for the rest."""

    def __init__(self, open_methods: Collection[str]) -> None:
        self.open_methods = frozenset(open_methods)
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def around(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        if self.draining and method not in self.open_methods:
            raise NotReadyError("the server is shutting down; retry on another replica")
        self.in_flight += 1
        self._idle.clear()
        try:
            return await inner(request, context)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def start(self, grace: float | None) -> None:
        """Refuse new calls from now on; wait up to `grace` seconds for those in flight."""
        self.draining = True
        if grace is None or grace <= 0:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            fault_log.warning("gRPC calls still in flight after the %.1fs grace period", grace)


class ApiKey(_UnaryInterceptor):
    """`authorization: Bearer <key>` or `x-api-key: <key>` metadata, by the rule every transport
    shares (app/calls/api_keys.py); no keys configured: every call passes."""

    def __init__(self, keys: Sequence[bytes], open_methods: Collection[str]) -> None:
        self.keys = list(keys)
        self.open_methods = frozenset(open_methods)

    async def around(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        if self.keys and method not in self.open_methods:
            metadata = context.invocation_metadata()
            bearer = metadata_value(metadata, "authorization")
            match = _BEARER.match(bearer) if bearer is not None else None
            candidate = match.group(1) if match else metadata_value(metadata, "x-api-key")
            check_api_key(
                candidate,
                self.keys,
                how_to_send="metadata `authorization: Bearer <key>` or `x-api-key: <key>`",
            )
        return await inner(request, context)


def _log_call(
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
