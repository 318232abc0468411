"""Dynamic batching: many concurrent requests, one model worker, batches formed by load.

Policy. Requests join a bounded queue. One collector task takes the first waiting image and
everything else already queued, up to `max_batch_size`. If that is more than one image (we are
under load) and the batch is not full, it waits at most `max_delay_s` for more. A lone request
on an idle server goes straight to the model: batching adds no wait when there is no queue.
While the model runs one batch, the next one queues up, so batch size follows load by itself.

Admission (app/serving/admission.py) decides who may join, from the queue's depth and the
expected wait this module estimates (`expected_wait_s`). The queue itself enforces deadlines
(an image whose deadline passed while queued is dropped before the model runs) and draining
(`stop_accepting`, `close`).

Tracing: one batch serves many requests, each in its own trace. The batch's forward pass is a
span of its own (a new trace) with a link to every request it served; each request learns the
batch's span and times, and records its share (app/serving/pipeline.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext

from app.errors import DeadlineExceededError, InferenceError, NotReadyError
from app.telemetry.metrics import Metrics
from app.telemetry.spans import exemplar

log = logging.getLogger(__name__)

# Images and probabilities are float32 numpy arrays: the core is engine-neutral, and only a
# backend knows its engine's tensors (app/model/backends/).
Array = npt.NDArray[np.float32]
InferFn = Callable[[Array], Array]


@dataclass(frozen=True)
class BatchTiming:
    queue_s: float
    inference_s: float
    batch_size: int
    # Wall-clock times of the forward pass (ns since the epoch, as spans take them) and its
    # span: a request's own share of the batch is recorded with them.
    started_ns: int = 0
    ended_ns: int = 0
    batch_span: SpanContext | None = None


@dataclass
class _Pending:
    tensor: Array
    future: asyncio.Future[tuple[Array, BatchTiming]]
    enqueued: float
    deadline: float | None
    trace_context: SpanContext | None = None  # the request's span, linked from the batch's


@dataclass
class _Stats:
    """Recent model speed, for the expected-wait estimate. An exponentially weighted mean per
    batch: cheap, and it follows a slow-down (noisy neighbour, larger batches) within seconds."""

    batch_seconds: float | None = None
    alpha: float = 0.2
    busy_since: float | None = None

    def record(self, seconds: float) -> None:
        if self.batch_seconds is None:
            self.batch_seconds = seconds
        else:
            self.batch_seconds += self.alpha * (seconds - self.batch_seconds)


class Batcher:
    def __init__(
        self,
        infer: InferFn,
        *,
        executor: Executor,
        max_batch_size: int,
        max_delay_s: float,
        metrics: Metrics,
        model_label: str,
        model_version: str = "",
        tracer: trace.Tracer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._infer = infer
        self._tracer = tracer or trace.NoOpTracer()
        self._model_version = model_version
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._metrics = metrics
        self._model_label = model_label
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        # The model thread: one worker, owned by the caller, shared with warm-up.
        self._executor = executor
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._running_batch = 0
        self._idle = asyncio.Event()
        self.stats = _Stats()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._accepting = True
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="batcher")

    def stop_accepting(self) -> None:
        """Refuse new work; queued and running images still get their answers."""
        self._accepting = False

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting, let the queue drain (bounded by `timeout_s`), then stop the worker."""
        self.stop_accepting()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.wait_idle()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(NotReadyError("the server is shutting down"))
        self._metrics.queue_depth.set(0)

    async def wait_idle(self) -> None:
        """Return once nothing is queued or running."""
        while self.depth or self._running_batch:
            self._idle.clear()
            await self._idle.wait()

    # --- what admission reads -------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Images queued, not yet handed to the model."""
        return self._queue.qsize()

    def expected_wait_s(self, extra: int = 1) -> float | None:
        """How long `extra` more images would wait before their results arrive, from recent
        batch times; None until the model has run a batch."""
        per_batch = self.stats.batch_seconds
        if per_batch is None:
            return None
        ahead = self.depth + extra
        batches = -(-ahead // self.max_batch_size)  # ceil
        remaining = 0.0
        if self.stats.busy_since is not None:
            remaining = max(0.0, per_batch - (self._clock() - self.stats.busy_since))
        return remaining + batches * per_batch

    async def submit(
        self, tensor: Array, *, deadline: float | None = None
    ) -> tuple[Array, BatchTiming]:
        """Queue one preprocessed image; returns its probability row and timings. Admission
        (app/serving/admission.py) has decided already that it may come; the queue only refuses
        once it is closed (draining: NotReadyError), and raises DeadlineExceededError when the
        deadline has passed already or passes while the image is queued (it is then never run)."""
        if not self._accepting:
            raise NotReadyError(
                "the server is draining and takes no new requests", headers={"Retry-After": "1"}
            )
        now = self._clock()
        if deadline is not None and now > deadline:
            self._metrics.rejected.labels(reason="deadline").inc()
            raise DeadlineExceededError("the request's deadline passed before it reached the queue")
        future: asyncio.Future[tuple[Array, BatchTiming]] = (
            asyncio.get_running_loop().create_future()
        )
        here = trace.get_current_span().get_span_context()
        self._queue.put_nowait(
            _Pending(tensor, future, now, deadline, here if here.is_valid else None)
        )
        self._metrics.queue_depth.set(self.depth)
        return await future

    # --- the collector ----------------------------------------------------------------------

    def _take_ready(self, batch: list[_Pending]) -> None:
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _gather(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        self._take_ready(batch)
        if 1 < len(batch) < self.max_batch_size and self.max_delay_s > 0:
            until = self._clock() + self.max_delay_s
            while len(batch) < self.max_batch_size:
                left = until - self._clock()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        batch.append(await self._queue.get())
                except TimeoutError:
                    break
                self._take_ready(batch)
        return batch

    def _admit(self, batch: list[_Pending]) -> list[_Pending]:
        """Drop cancelled requests (client went away) and those past their deadline."""
        now = self._clock()
        live = []
        for pending in batch:
            if pending.future.done():
                continue
            if pending.deadline is not None and now > pending.deadline:
                self._metrics.rejected.labels(reason="deadline").inc()
                pending.future.set_exception(
                    DeadlineExceededError(
                        f"the request's deadline passed after {now - pending.enqueued:.2f}s "
                        "in the queue; it was not run"
                    )
                )
                continue
            live.append(pending)
        return live

    def _infer_batch(self, tensors: list[Array]) -> Array:
        """One forward pass over the batch, on the model thread. Stacking copies every image
        (0.6 MB at 224 px, fp32), so it happens here rather than on the event loop, and a lone
        image (the common case at low load) is only viewed as a batch of one."""
        batch = tensors[0][np.newaxis] if len(tensors) == 1 else np.stack(tensors)
        return self._infer(batch)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self._metrics.queue_depth.set(self.depth)
            batch = self._admit(batch)
            if not batch:
                continue
            self._running_batch = len(batch)
            started = self._clock()
            self.stats.busy_since = started
            # A new trace (Context(): no parent), linked to every request it serves.
            span = self._tracer.start_span(
                "inference batch",
                context=Context(),
                kind=trace.SpanKind.INTERNAL,
                links=[Link(p.trace_context) for p in batch if p.trace_context is not None],
                attributes={"batch.size": len(batch), "model.name": self._model_label,
                            **({"model.version": self._model_version}
                               if self._model_version else {})},
            )  # fmt: skip
            started_ns = time.time_ns()
            try:
                tensors = [p.tensor for p in batch]
                probs = await loop.run_in_executor(self._executor, self._infer_batch, tensors)
            except Exception as exc:  # a model fault: every request of the batch learns of it
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, "inference failed"))
                span.end()
                log.exception("inference failed for a batch of %d", len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(
                            InferenceError("the model failed on this batch; see server logs")
                        )
                continue
            finally:
                self._running_batch = 0
                self.stats.busy_since = None
                self._idle.set()
            elapsed = self._clock() - started
            ended_ns = time.time_ns()
            span.end(end_time=ended_ns)
            batch_span = span.get_span_context()
            self.stats.record(elapsed)
            self._metrics.batch_size.observe(len(batch))
            with trace.use_span(span):  # the exemplar points at the batch's trace
                self._metrics.inference_duration.labels(model=self._model_label).observe(
                    elapsed, exemplar=exemplar()
                )
            for row, pending in enumerate(batch):
                queue_s = started - pending.enqueued
                self._metrics.queue_wait.observe(queue_s)
                if not pending.future.done():
                    timing = BatchTiming(queue_s, elapsed, len(batch), started_ns, ended_ns,
                                         batch_span if batch_span.is_valid else None)  # fmt: skip
                    pending.future.set_result((probs[row], timing))
