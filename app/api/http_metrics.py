"""HTTP metrics through prometheus-fastapi-instrumentator, with the names and labels the chart's
alerts and dashboards already use (a public contract, app/telemetry/metrics.py):

- `request_count_total{method, route, status}` and `request_duration_seconds{method, route}`:
  our own instrumentation functions on the instrumentator's per-request `Info`. The library's
  default metrics are named `http_requests_total` / `http_request_duration_*` with a `handler`
  label and grouped status codes, so they are not used.
- `request_errors_total{code}`: the stable error code the error handlers recorded.
- `requests_in_flight`: a small middleware of ours. The library's in-progress gauge is always
  created in prometheus_client's global registry (its `registry` argument is not passed to
  it, in 8.1.0), which would mix apps that share a process; every metric here lives in the
  app's own registry.

The instrumentator's middleware is added last, so it is the outermost layer: a 413 from the
body cap or a 500 from the last-resort handler is counted like any other answer. Unmatched
paths are grouped into one `unmatched` route label, so label values stay bounded.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.middleware import route_of
from app.calls.context import context_of
from app.telemetry.metrics import Metrics
from app.telemetry.spans import exemplar


def _route(info: Info) -> str:
    """The route template the router matched (the same label as the access log's), or
    `unmatched`: read from the request's scope, where routing left it."""
    return route_of(info.request.scope)


def _count_and_time(metrics: Metrics):  # type: ignore[no-untyped-def]
    def instrumentation(info: Info) -> None:
        route = _route(info)
        metrics.request_count.labels(
            method=info.method, route=route, status=info.modified_status
        ).inc()
        # The exemplar: this request's trace, which a Grafana panel can open from its bucket.
        metrics.request_duration.labels(method=info.method, route=route).observe(
            info.modified_duration, exemplar=exemplar()
        )

    return instrumentation


def _error_codes(metrics: Metrics):  # type: ignore[no-untyped-def]
    def instrumentation(info: Info) -> None:
        code = context_of(info.request.scope).error_code
        if code:
            metrics.request_errors.labels(code=code).inc()

    return instrumentation


class InFlightMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.gauge = metrics.requests_in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gauge.dec()


def instrument(app: FastAPI, metrics: Metrics) -> None:
    """Add the HTTP metrics as the outermost middleware. Call after every other middleware."""
    app.add_middleware(InFlightMiddleware, metrics=metrics)
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        should_ignore_untemplated=False,
        should_group_untemplated=True,
        should_respect_env_var=False,
        registry=metrics.registry,
    )
    instrumentator.add(_count_and_time(metrics), _error_codes(metrics))
    instrumentator.instrument(app)
