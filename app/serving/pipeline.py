"""The request pipeline: an admitted image in, class scores out.

    fetch (URL only) -> cache lookup -> decode + preprocess (bounded pool, memory budget) ->
    batch queue -> model thread -> probabilities -> cache store -> top-k

The prediction cache (app/cache/) sits between an image's bytes and their decode: a hit skips
decode, queue and model; a miss is inferred once however many identical images arrive together
(single-flight), and its scores are stored.

Every call carries the admission `Ticket` of its request (app/serving/admission.py): the deadline
comes from it, and each image leaves it as it enters the batch queue. The pipeline runs on the
engine the model host loaded (`start`); it knows nothing of HTTP or of the protocol that asked.

Each stage is a span of the request's trace (app/telemetry/tracing.py): the cache lookup, the
URL fetch, the decode (its thread runs in the request's context), the wait in the queue and the
request's share of its batch's forward pass (linked to the batch's own span), and the top-k.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, overload

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Link

from app.cache.cache import PredictionCache
from app.cache.entry import CachedScores
from app.cache.policy import CachePolicy
from app.errors import NotReadyError, ServingError
from app.images.decoder import ImageDecoder, Preprocessed
from app.images.fetch import RoomFor, UrlFetcher
from app.memory.bodies import SINGLE_IMAGE_HELD, BodyMemory
from app.model.host import Engine
from app.serving.admission import Ticket
from app.serving.batcher import Array, Batcher, BatchTiming
from app.telemetry.metrics import Metrics


@dataclass(frozen=True)
class ClassScore:
    label: str
    class_id: int
    score: float


# The stages a cache hit does not run, as the timing block names them.
SKIPPED_ON_HIT = ("decode", "queue", "inference")


@dataclass(frozen=True)
class Timing:
    fetch_ms: float | None
    decode_ms: float | None  # None: skipped (a cache hit)
    queue_ms: float | None
    inference_ms: float | None
    cache_ms: float | None = None  # hashing and lookup; None when the cache was not consulted
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    predictions: list[ClassScore]
    timing: Timing
    batch_size: int  # 0 for a cache hit: no forward pass
    image_format: str
    image_size: tuple[int, int]
    cache: Literal["hit", "miss"] = "miss"


@dataclass(frozen=True)
class Scored:
    """One image's full probability row (protocols return every class), how its batch ran, and
    what its decode found (None for an image that came preprocessed, as a tensor), or the
    cache entry it came from instead (`timing` and `decoded` are then None)."""

    probabilities: Array
    timing: BatchTiming | None
    decoded: Preprocessed | None = None
    cached: CachedScores | None = None
    lookup_s: float | None = None  # None: the cache was not consulted


# One image of a request, as `score_many` takes it: a coroutine that reads its bytes (decoded
# here) or hands over an already preprocessed float32 array [3, S, S]. Reading inside the
# image's own task keeps a multipart batch's per-file checks (type, size) per file.
ImageSource = Callable[[], Awaitable[bytes | Array]]


class RequestPipeline:
    def __init__(
        self,
        *,
        decoder: ImageDecoder,
        cache: PredictionCache | None,
        fetcher: UrlFetcher,
        body_memory: BodyMemory,
        metrics: Metrics,
        model_name: str,
        max_batch_size: int,
        max_batch_delay_s: float,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.tracer = tracer or trace.NoOpTracer()
        self.decoder = decoder
        self.cache = cache
        self.fetcher = fetcher
        self.body_memory = body_memory
        self.metrics = metrics
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self._engine: Engine | None = None
        self._batcher: Batcher | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, engine: Engine) -> Batcher:
        """Run on the loaded engine; returns the batch queue (admission reads its depth)."""
        self._engine = engine
        self._batcher = Batcher(
            engine.runtime.infer,
            executor=engine.thread,
            max_batch_size=self.max_batch_size,
            max_delay_s=self.max_batch_delay_s,
            metrics=self.metrics,
            model_label=self.model_name,
            tracer=self.tracer,
        )
        self._batcher.start()
        return self._batcher

    def stop_accepting(self) -> None:
        if self._batcher is not None:
            self._batcher.stop_accepting()

    async def close(self, timeout_s: float) -> None:
        """Queued images still get their answers (bounded by `timeout_s`), then it stops."""
        if self._batcher is not None:
            await self._batcher.close(timeout_s)
        await self.fetcher.aclose()
        self.decoder.shutdown()

    def _running(self) -> tuple[Engine, Batcher]:
        if self._engine is None or self._batcher is None:
            raise NotReadyError("the model is not ready", headers={"Retry-After": "5"})
        return self._engine, self._batcher

    # --- stages -----------------------------------------------------------------------------

    async def fetch(self, url: str, room_for: RoomFor | None = None) -> tuple[bytes, float]:
        """The image at `url` and the seconds its download took (app/images/fetch.py's policy)."""
        outcome = "ok"
        started = time.perf_counter()
        try:
            with self.tracer.start_as_current_span("fetch image", kind=trace.SpanKind.CLIENT):
                fetched = await self.fetcher.fetch(url, room_for=room_for)
        except Exception as exc:
            outcome = getattr(exc, "code", "error")
            raise
        finally:
            self.metrics.url_fetch_duration.labels(outcome=outcome).observe(
                time.perf_counter() - started
            )
        return fetched.data, fetched.seconds

    async def decode(self, data: bytes, ticket: Ticket) -> Preprocessed:
        engine, _ = self._running()
        self.metrics.image_bytes.observe(len(data))
        with self.tracer.start_as_current_span("decode") as span:
            span.set_attribute("image.bytes", len(data))
            result = await self.decoder.preprocess(
                data, engine.preprocessor, deadline=ticket.deadline
            )
            width, height = result.image_size
            span.set_attributes({"image.format": result.image_format, "image.width": width,
                                 "image.height": height})  # fmt: skip
        self.metrics.image_decode_duration.observe(result.decode_s)
        return result

    async def score(self, tensor: Array, ticket: Ticket) -> Scored:
        """One preprocessed image [3, S, S] through the batch queue and the model."""
        _, batcher = self._running()
        ticket.hand_off()
        enqueued_ns = time.time_ns()
        probabilities, timing = await batcher.submit(tensor, deadline=ticket.deadline)
        self._record_batch_share(enqueued_ns, timing)
        return Scored(probabilities, timing)

    def _record_batch_share(self, enqueued_ns: int, timing: BatchTiming) -> None:
        """The request's wait in the queue and its share of the batch's forward pass, as spans
        of its own trace, after the fact (the batch ran on the model thread)."""
        if not trace.get_current_span().is_recording():
            return
        queued = self.tracer.start_span("queue", start_time=enqueued_ns)
        queued.end(end_time=max(enqueued_ns, timing.started_ns))
        links = [Link(timing.batch_span)] if timing.batch_span is not None else []
        share = self.tracer.start_span(
            "inference",
            start_time=timing.started_ns,
            links=links,
            attributes={"batch.size": timing.batch_size, "model.name": self.model_name},
        )
        share.end(end_time=timing.ended_ns)

    def top_k(self, probabilities: Array, k: int) -> list[ClassScore]:
        with self.tracer.start_as_current_span("top_k", attributes={"top_k": k}):
            return self._top_k(probabilities, k)

    def _top_k(self, probabilities: Array, k: int) -> list[ClassScore]:
        engine, _ = self._running()
        k = min(k, probabilities.shape[0])
        # The k largest, highest first; among equal scores the lower class id first.
        best = np.argpartition(-probabilities, k - 1)[:k]
        best = best[np.lexsort((best, -probabilities[best]))]
        return [
            ClassScore(label=engine.labels[i], class_id=i, score=float(probabilities[i]))
            for i in best.tolist()
        ]

    def count(self, probabilities: Array) -> None:
        """Prediction metrics for one classified image: the count, its top-1 class and the
        top-1 class's probability."""
        engine, _ = self._running()
        top1 = int(np.argmax(probabilities))
        self.metrics.prediction_count.labels(model=self.model_name).inc()
        self.metrics.top1_score.observe(float(probabilities[top1]))
        self.metrics.predicted_class.labels(
            model=self.model_name, class_name=engine.labels[top1]
        ).inc()

    # --- whole requests ---------------------------------------------------------------------

    async def score_bytes(
        self, data: bytes, ticket: Ticket, cache: CachePolicy = CachePolicy.USE
    ) -> Scored:
        """One encoded image: from the prediction cache, or decode, the batch queue and the
        model (once for identical images in flight together); counted in the metrics."""
        store = self.cache
        if store is None or cache is CachePolicy.BYPASS:
            return await self._infer_bytes(data, ticket)
        started = time.perf_counter()
        with self.tracer.start_as_current_span("cache lookup") as span:
            key = await store.key_for(data)
            hit = await store.lookup(key) if cache is CachePolicy.USE else None
            span.set_attributes({"cache.result": "hit" if hit else "miss",
                                 "cache.tier": hit.tier if hit else "",
                                 "cache.policy": cache.value})  # fmt: skip
        if hit is not None:
            self.count(hit.entry.probabilities)
            return self._from_cache(hit.entry, started)
        lookup_s = time.perf_counter() - started

        async def infer_and_store() -> Scored:
            scored = await self._infer_bytes(data, ticket)
            assert scored.decoded is not None
            decoded = scored.decoded
            entry = CachedScores.of(scored.probabilities, decoded.image_format, decoded.image_size)
            store.store(key, entry)
            return replace(scored, cached=None, lookup_s=lookup_s)

        scored, led = await store.flights.run(key, infer_and_store, ticket.deadline)
        if led:
            return scored
        # An identical image was being classified: its answer, which cost this request no
        # decode and no forward pass.
        assert scored.decoded is not None
        decoded = scored.decoded
        self.count(scored.probabilities)
        entry = CachedScores.of(scored.probabilities, decoded.image_format, decoded.image_size)
        return self._from_cache(entry, started)

    async def _infer_bytes(self, data: bytes, ticket: Ticket) -> Scored:
        item = await self.decode(data, ticket)
        scored = await self.score(item.tensor, ticket)
        self.count(scored.probabilities)
        return Scored(scored.probabilities, scored.timing, item)

    @staticmethod
    def _from_cache(entry: CachedScores, started: float) -> Scored:
        return Scored(
            entry.probabilities, None, cached=entry, lookup_s=time.perf_counter() - started
        )

    def prediction(self, scored: Scored, top_k: int, fetch_s: float | None = None) -> Prediction:
        """What /predict answers for one scored image."""
        fetch_ms = None if fetch_s is None else fetch_s * 1000.0
        cache_ms = None if scored.lookup_s is None else scored.lookup_s * 1000.0
        if scored.cached is not None:
            entry = scored.cached
            return Prediction(
                predictions=self.top_k(scored.probabilities, top_k),
                timing=Timing(fetch_ms, None, None, None, cache_ms, SKIPPED_ON_HIT),
                batch_size=0,
                image_format=entry.image_format,
                image_size=entry.image_size,
                cache="hit",
            )
        item, t = scored.decoded, scored.timing
        assert item is not None, "a prediction is made from an image this pipeline decoded"
        assert t is not None
        return Prediction(
            predictions=self.top_k(scored.probabilities, top_k),
            timing=Timing(
                fetch_ms=fetch_ms,
                decode_ms=item.decode_s * 1000.0,
                queue_ms=t.queue_s * 1000.0,
                inference_ms=t.inference_s * 1000.0,
                cache_ms=cache_ms,
            ),
            batch_size=t.batch_size,
            image_format=item.image_format,
            image_size=item.image_size,
        )

    async def classify_bytes(
        self,
        data: bytes,
        ticket: Ticket,
        *,
        top_k: int,
        fetch_s: float | None = None,
        cache: CachePolicy = CachePolicy.USE,
    ) -> Prediction:
        return self.prediction(await self.score_bytes(data, ticket, cache), top_k, fetch_s)

    async def classify_url(
        self, url: str, ticket: Ticket, *, top_k: int, cache: CachePolicy = CachePolicy.USE
    ) -> tuple[Prediction, bytes]:
        """The prediction and the downloaded bytes (what a shadow copy sends: never fetched
        twice). A downloaded image holds memory as an uploaded one does: its bytes are reserved
        in the body budget (declared length, or the cap) before they are read, until
        answered."""
        held = 0

        async def room_for(size: int) -> None:
            nonlocal held
            need = math.ceil(size * SINGLE_IMAGE_HELD)  # held as an uploaded image is
            held = await self.body_memory.reserve(need, ticket.deadline)

        try:
            data, seconds = await self.fetch(url, room_for)
            prediction = await self.classify_bytes(
                data, ticket, top_k=top_k, fetch_s=seconds, cache=cache
            )
            return prediction, data
        finally:
            self.body_memory.release(held)

    @overload
    async def score_many(
        self,
        ticket: Ticket,
        images: Sequence[ImageSource],
        *,
        fail_fast: Literal[True],
        cache: CachePolicy = ...,
    ) -> list[Scored]: ...

    @overload
    async def score_many(
        self,
        ticket: Ticket,
        images: Sequence[ImageSource],
        *,
        fail_fast: Literal[False],
        cache: CachePolicy = ...,
    ) -> list[Scored | ServingError]: ...

    async def score_many(
        self,
        ticket: Ticket,
        images: Sequence[ImageSource],
        *,
        fail_fast: bool,
        cache: CachePolicy = CachePolicy.USE,
    ) -> list[Scored] | list[Scored | ServingError]:
        """Several images of one request, on its one ticket (admitted for all of them by the
        caller, who gives it back), all at once, in request order.

        `fail_fast=True` (the protocol: one answer for the whole call): the first image that
        fails fails the call and the others are cancelled (one still in the queue never
        reaches the model); its ServingError is raised, else the first exception as it is.
        `fail_fast=False` (/predict/batch): each image gets its own answer or its own
        ServingError, and the others go on; any other exception is a server fault and raised.
        Encoded images go through the prediction cache (`cache`), preprocessed tensors do not.
        """

        async def one(source: ImageSource) -> Scored:
            image = await source()
            if isinstance(image, bytes):
                return await self.score_bytes(image, ticket, cache)
            scored = await self.score(image, ticket)
            self.count(scored.probabilities)
            return scored

        if not fail_fast:

            async def own_answer(source: ImageSource) -> Scored | ServingError:
                try:
                    return await one(source)
                except ServingError as exc:
                    return exc

            return list(await asyncio.gather(*(own_answer(source) for source in images)))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(source)) for source in images]
        except BaseExceptionGroup as failed:
            raise _first_serving_error(failed) from None
        return [task.result() for task in tasks]


def _first_serving_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report: the first ServingError (what the client did wrong, or overload),
    else the first exception as it is (a server fault)."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    for exc in flat:
        if isinstance(exc, ServingError):
            return exc
    return flat[0]
