"""Typed dependencies: what a route needs, declared once. The work behind them lives in their
own modules: the body caps and memory (app/api/bodies.py), reading the input
(app/api/inputs.py), the deadline rule (app/calls/deadlines.py) and admission (the core).

Resolved in this order for a prediction route (FastAPI runs a route's `dependencies` first):
the API key (protected router) -> the body (`single_image_body` / `batch_body`: its cap, then its
memory reserved within the request's deadline) -> `Admitted` (admission, before a byte of the
body is read) -> the input (`ImageInput`, `Uploads`), which reads the body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from starlette.datastructures import UploadFile

from app.api import bodies, inputs
from app.cache.cache import PredictionCache
from app.cache.policy import CachePolicy, from_cache_control
from app.calls.context import request_context
from app.calls.deadlines import deadline_after, parse_timeout
from app.memory.bodies import BATCH_HELD, PROTOCOL_HELD, SINGLE_IMAGE_HELD, BodyMemory
from app.model.host import ModelHost
from app.serving.admission import Ticket
from app.serving.pipeline import RequestPipeline
from app.serving.service import Service
from app.settings.config import Settings
from app.shadow.comparison import Shadow
from app.telemetry.metrics import Metrics

# --- the app's parts ----------------------------------------------------------------------------


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


# Dependencies are `async def` although none of them awaits: FastAPI runs a plain `def`
# dependency on its worker threads, a round trip to another thread (and the GIL) for every one of
# them on every request; these only read attributes (bench/experiments/profile_request.py
# measured it).


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


async def _cache(request: Request) -> PredictionCache:
    return _service(request).cache


async def _shadow(request: Request) -> Shadow | None:
    shadow: Shadow | None = request.app.state.shadow
    return shadow


async def _cache_policy(
    cache_control: Annotated[
        str | None,
        Header(
            alias="Cache-Control",
            description="`no-cache`: classify afresh and refresh the cached answer; "
            "`no-store`: neither read nor write the prediction cache.",
        ),
    ] = None,
) -> CachePolicy:
    return from_cache_control(cache_control)


SettingsDep = Annotated[Settings, Depends(_settings)]
HostDep = Annotated[ModelHost, Depends(_host)]
PipelineDep = Annotated[RequestPipeline, Depends(_pipeline)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
BodyMemoryDep = Annotated[BodyMemory, Depends(_body_memory)]
CacheDep = Annotated[PredictionCache, Depends(_cache)]
CachePolicyDep = Annotated[CachePolicy, Depends(_cache_policy)]
ShadowDep = Annotated[Shadow | None, Depends(_shadow)]


# --- the deadline -------------------------------------------------------------------------------


def request_deadline(request: Request, settings: Settings) -> float:
    """The request's absolute deadline (X-Request-Timeout, else the default, at most the
    maximum), fixed the first time something asks (the body budget's wait, admission, the
    protocol's handler), so all of them work to the same one."""
    context = request_context(request)
    if context.deadline is None:
        header = request.headers.get("x-request-timeout")
        timeout = None if header is None else parse_timeout(header, name="X-Request-Timeout")
        context.deadline = deadline_after(
            timeout, default_s=settings.request_timeout_s, max_s=settings.max_request_timeout_s
        )
    return context.deadline


# --- body caps, declared per route ----------------------------------------------------------


def _body(
    limit_for: Callable[[Settings], int], held_per_byte: float
) -> Callable[[Request, Settings, BodyMemory], AsyncIterator[None]]:
    async def declare(
        request: Request, settings: SettingsDep, memory: BodyMemoryDep
    ) -> AsyncIterator[None]:
        async with bodies.body_held(
            request,
            limit=limit_for(settings),
            held_per_byte=held_per_byte,
            memory=memory,
            deadline=lambda: request_deadline(request, settings),
        ):
            yield

    return declare


single_image_body = Depends(_body(bodies.single_image_limit, SINGLE_IMAGE_HELD), scope="function")
batch_body = Depends(_body(bodies.batch_limit, BATCH_HELD), scope="function")
protocol_body = Depends(_body(bodies.protocol_limit, PROTOCOL_HELD), scope="function")


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


# --- inputs (after admission: `Admitted` comes before the body is read) ----------------------


async def _image_input(request: Request, settings: SettingsDep, call: Admitted) -> inputs.ImageRef:
    with _service(request).tracer.start_as_current_span("read body"):
        return await inputs.read_image(request, settings.max_upload_bytes)


async def _uploads(request: Request, settings: SettingsDep, call: Admitted) -> list[UploadFile]:
    """The ticket grows to the number of files (admission for the rest of them, now that
    their count is known)."""
    with _service(request).tracer.start_as_current_span("read body"):
        uploads = await inputs.read_uploads(request, settings.max_batch_files)
    call.ticket.extend(len(uploads) - 1)
    return uploads


ImageInput = Annotated[inputs.ImageRef, Depends(_image_input)]
Uploads = Annotated[list[UploadFile], Depends(_uploads)]
