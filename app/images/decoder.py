"""Decode + preprocess on a bounded thread pool, within a memory budget.

Each image is opened (header only) in a decode thread, which prices its decode
(`decode_peak_bytes`) and, when the budget has room and nobody waits ahead, reserves it and
decodes at once: one trip to the pool, as before there was a budget. Otherwise the image goes
back to the event loop to wait for room (holding no pixels and no thread) until its deadline,
then is decoded; past the deadline it is refused with 503 `memory_busy`. An image that needs
more than the whole budget can never be decoded here: 413 `image_too_large`. One whose deadline
passes while it waits for a decode thread is not decoded at all: 504 `deadline_exceeded`. The
reservation is given back when the tensor exists and the decoded image is freed, by the thread
itself, or by the pool future's callback if the job never ran (cancelled while queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from PIL import Image

from app.errors import DeadlineExceededError, ImageTooLargeError, MemoryBusyError
from app.images.decode import OpenedImage, finish_decode, open_image
from app.images.decode_cost import budget_bytes, decode_peak_bytes
from app.images.preprocess import Preprocessor
from app.memory.budget import MIB, SizedBudget
from app.memory.cgroup import return_free_memory
from app.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# Pillow allocates image memory in blocks of this size. Above glibc's largest mmap threshold
# (32 MiB), every full block is mmap'ed and goes back to the OS when freed, instead of staying in
# a heap (Pillow's default, 16 MiB, falls under glibc's dynamic threshold after the first free).
PILLOW_BLOCK_BYTES = 64 * MIB
# After an image whose reservation was at least this large, free heap pages are trimmed.
TRIM_AFTER_BYTES = 32 * MIB


@dataclass(frozen=True)
class Preprocessed:
    tensor: npt.NDArray[np.float32]  # (3, S, S), the model's input
    image_format: str
    image_size: tuple[int, int]
    decode_s: float


@dataclass(frozen=True)
class _MustWait:
    """Opened, priced, not reserved: the budget is full or others wait ahead."""

    opened: OpenedImage
    cost: int
    header_s: float


class ImageDecoder:
    def __init__(
        self,
        *,
        workers: int,
        max_pixels: int,
        pixels_in_flight: int,
        metrics: Metrics,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.tracer = tracer or trace.NoOpTracer()
        self.max_pixels = max_pixels
        self.metrics = metrics
        Image.core.set_block_size(PILLOW_BLOCK_BYTES)  # type: ignore[attr-defined]  # process-wide
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        # Bounds images being decoded or waiting for a decode thread: past it, callers wait
        # here (holding no pixels) instead of piling decoded images up in memory.
        self._slots = asyncio.Semaphore(workers * 4)

        def sizing(limit: int | None, baseline: int | None) -> tuple[int, str]:
            return budget_bytes(pixels_in_flight, limit=limit, baseline=baseline)

        self.budget = SizedBudget(
            "decode",
            sizing,
            in_flight=metrics.decode_memory_in_flight,
            capacity=metrics.decode_memory_budget,
        )

    def size_budget(self, *, limit: int | None, baseline: int | None) -> None:
        """Fix the budget once the model is loaded (log line `decode memory budget`)."""
        self.budget.size(limit=limit, baseline=baseline)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- in a decode thread -----------------------------------------------------------------

    def _finish(
        self, opened: OpenedImage, preprocessor: Preprocessor, spent_s: float
    ) -> Preprocessed:
        started = time.perf_counter()
        decoded = finish_decode(opened, max_pixels=self.max_pixels)
        try:
            tensor = preprocessor(decoded.image)
        finally:
            decoded.image.close()  # freed before the reservation is given back
        return Preprocessed(
            tensor, decoded.format, decoded.original_size, spent_s + time.perf_counter() - started
        )

    def _check_deadline(self, deadline: float | None) -> None:
        """Decoding for a request whose deadline passed wastes the CPU others wait for."""
        if deadline is not None and time.monotonic() > deadline:
            self.metrics.rejected.labels(reason="deadline").inc()
            raise DeadlineExceededError(
                "the request's deadline passed while its image waited to be decoded; "
                "it was not decoded"
            )

    def _open_and_decode(
        self, data: bytes, preprocessor: Preprocessor, deadline: float | None
    ) -> Preprocessed | _MustWait:
        self._check_deadline(deadline)
        started = time.perf_counter()
        opened = open_image(
            data, max_pixels=self.max_pixels, draft_short_side=preprocessor.resize_size
        )
        try:
            cost = decode_peak_bytes(opened, data)
        except Exception:
            opened.image.close()
            raise
        header_s = time.perf_counter() - started
        if cost > self.budget.capacity:
            opened.image.close()
            width, height = opened.size
            raise ImageTooLargeError(
                f"decoding this {opened.format} image ({width}x{height}, {opened.mode}) needs "
                f"about {math.ceil(cost / MIB)} MiB, more than this server's decode memory budget "
                f"of {self.budget.capacity // MIB} MiB (SERVING_MAX_PIXELS_IN_FLIGHT, or the "
                "memory limit); send it smaller"
            )
        if not self.budget.try_acquire(cost):
            return _MustWait(opened, cost, header_s)
        try:
            return self._finish(opened, preprocessor, header_s)
        finally:
            self._release(cost)

    def _decode_reserved(
        self, waited: _MustWait, preprocessor: Preprocessor, deadline: float | None
    ) -> Preprocessed:
        try:
            try:
                self._check_deadline(deadline)
            except DeadlineExceededError:
                waited.opened.image.close()
                raise
            return self._finish(waited.opened, preprocessor, waited.header_s)
        finally:
            self._release(waited.cost)

    def _release(self, cost: int) -> None:
        self.budget.release(cost)
        if cost >= TRIM_AFTER_BYTES:
            return_free_memory()

    # --- on the event loop ------------------------------------------------------------------

    async def preprocess(
        self, data: bytes, preprocessor: Preprocessor, *, deadline: float | None = None
    ) -> Preprocessed:
        loop = asyncio.get_running_loop()
        async with self._slot(deadline):
            # The decode thread runs in the request's context (its trace, for spans and the
            # log lines written there): an executor does not carry contextvars by itself.
            context = contextvars.copy_context()
            outcome = await loop.run_in_executor(
                self._pool, context.run, self._open_and_decode, data, preprocessor, deadline
            )
        if isinstance(outcome, _MustWait):
            outcome = await self._wait_then_decode(outcome, preprocessor, deadline)
        return outcome

    async def _wait_then_decode(
        self, waited: _MustWait, preprocessor: Preprocessor, deadline: float | None
    ) -> Preprocessed:
        try:
            with self.tracer.start_as_current_span(
                "wait for decode memory", attributes={"memory.bytes": waited.cost}
            ):
                granted = await self.budget.acquire(waited.cost, deadline)
        except BaseException:
            waited.opened.image.close()
            raise
        if not granted:
            waited.opened.image.close()
            self.metrics.rejected.labels(reason="decode_memory").inc()
            raise MemoryBusyError(
                f"the images being decoded hold the decode memory budget "
                f"({self.budget.capacity // MIB} MiB) and this one, needing about "
                f"{math.ceil(waited.cost / MIB)} MiB, found no room before its deadline; "
                "retry shortly",
                headers={"Retry-After": "1"},
            )
        submitted = False
        try:
            async with self._slot(deadline):
                job: Future[Preprocessed] = self._pool.submit(
                    contextvars.copy_context().run,
                    self._decode_reserved,
                    waited,
                    preprocessor,
                    deadline,
                )
                submitted = True
                # A job cancelled before it ran never gives the reservation back itself.
                job.add_done_callback(lambda f: self._release_if_cancelled(f, waited))
                return await asyncio.wrap_future(job)
        finally:
            if not submitted:  # cancelled while waiting for a slot, or the pool is closed
                waited.opened.image.close()
                self.budget.release(waited.cost)

    @contextlib.asynccontextmanager
    async def _slot(self, deadline: float | None) -> AsyncIterator[None]:
        """A place among the images being decoded or queued for a decode thread, waited for
        within the deadline: past it, the image is not worth decoding (504)."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            self.metrics.rejected.labels(reason="deadline").inc()
            raise DeadlineExceededError(
                "the request's deadline passed while its image waited for a decode thread; "
                "it was not decoded"
            ) from None
        try:
            yield
        finally:
            self._slots.release()

    def _release_if_cancelled(self, job: Future[Preprocessed], waited: _MustWait) -> None:
        if job.cancelled():
            waited.opened.image.close()
            self.budget.release(waited.cost)
