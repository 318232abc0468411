"""Admission control: the one door every prediction passes, once, before any work is spent.

It owns everything counted against capacity: images admitted but not yet in the batch queue
(their bodies being read, their URLs fetched, their pixels decoded) and, through the batcher,
the queue itself. A request is refused at once (503 with Retry-After) when the model is not
ready or draining, when its images would overfill the queue (SERVING_MAX_QUEUE_SIZE), or when
the expected wait already exceeds its deadline. An admitted request holds a `Ticket` for its
images; each image leaves the ticket when it enters the queue (`hand_off`), and whatever is
left is given back when the request ends (`release`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from opentelemetry import trace

from app.errors import OverloadedError
from app.telemetry.metrics import Metrics


class QueueView(Protocol):
    """What admission reads of the batch queue (app.serving.batcher.Batcher)."""

    @property
    def depth(self) -> int: ...

    def expected_wait_s(self, extra: int = 1) -> float | None: ...


class Readiness(Protocol):
    """Raises NotReadyError (503, Retry-After) unless the model serves
    (app.model.host.ModelHost)."""

    def require_ready(self) -> object: ...


class Ticket:
    """The images one admitted request holds against capacity."""

    def __init__(self, admission: Admission, images: int, deadline: float) -> None:
        self._admission = admission
        self.held = images
        self.deadline = deadline

    def extend(self, images: int) -> None:
        """More images for the same request (a batch whose size is known once its body is
        read): admitted against what is left, or OverloadedError; the ticket keeps what it had."""
        if images > 0:
            self._admission.check(self.deadline, images, holding=self.held)
            self._admission.held += images
            self.held += images

    def hand_off(self) -> None:
        """One image entered the batch queue: from now on the queue counts it."""
        if self.held > 0:
            self.held -= 1
            self._admission.held -= 1

    def release(self) -> None:
        """The request is over: images that never reached the queue stop counting."""
        self._admission.held -= self.held
        self.held = 0


class Admission:
    def __init__(
        self,
        readiness: Readiness,
        *,
        max_queue_size: int,
        metrics: Metrics,
        tracer: trace.Tracer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracer = tracer or trace.NoOpTracer()
        self._readiness = readiness
        self.max_queue_size = max_queue_size
        self._metrics = metrics
        self._clock = clock
        self._queue: QueueView | None = None
        self.held = 0  # admitted images not yet in the queue

    def attach(self, queue: QueueView) -> None:
        """The batch queue, once the pipeline runs (before that, readiness refuses)."""
        self._queue = queue

    def admit(self, deadline: float, images: int = 1) -> Ticket:
        # A refusal ends the span with its error (the request's 503 says which).
        with self._tracer.start_as_current_span("admission", attributes={"images": images}):
            self.check(deadline, images)
        self.held += images
        return Ticket(self, images, deadline)

    def check(self, deadline: float, images: int, *, holding: int = 0) -> None:
        """Raises NotReadyError or OverloadedError if `images` more cannot be taken now.
        `holding`: images this same request holds already (counted once, not twice)."""
        self._readiness.require_ready()
        queue = self._queue
        depth = queue.depth if queue is not None else 0
        waiting = depth + self.held
        if waiting + images > self.max_queue_size:
            self._metrics.rejected.labels(reason="queue_full").inc()
            raise OverloadedError(
                f"{waiting} images are already waiting (SERVING_MAX_QUEUE_SIZE); retry shortly",
                headers={"Retry-After": self.retry_after()},
            )
        if queue is None:
            return
        now = self._clock()
        # Everyone held ahead of these images is counted as queued: they will be by then.
        expected = queue.expected_wait_s(extra=self.held - holding + images)
        if expected is not None and now + expected > deadline:
            self._metrics.rejected.labels(reason="expected_wait").inc()
            raise OverloadedError(
                f"the expected wait of {expected:.2f}s exceeds this request's remaining time "
                f"of {max(0.0, deadline - now):.2f}s; retry shortly",
                headers={"Retry-After": self.retry_after()},
            )

    def retry_after(self) -> str:
        """Whole seconds until the current queue should have drained (at least 1)."""
        expected = self._queue.expected_wait_s(extra=0) if self._queue is not None else None
        return str(max(1, math.ceil(expected or 1.0)))
