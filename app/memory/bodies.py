"""A memory budget for request bodies in flight.

Admission counts images and the decode budget (app/images/decode_cost.py) covers decoded pixels;
neither sees the bodies' own bytes. 64 concurrent uploads of a 9.8 MB JPEG, each under
SERVING_MAX_UPLOAD_BYTES, raised a server's RSS by 960 MiB (bench/memory_burst.py, image
`jpeg-noise-10mb`). So every request with a body reserves, before its body is read, what reading
and parsing that body will hold, and gives it back once it is answered: its Content-Length (the
route's cap when it sends none: a chunked body's size is not known in advance) times its route's
factor, declared with the route's body cap in app/api/deps.py.

Separate from the decode budget on purpose: a request holds its body while its image waits for
decode memory, and one pool for both would let a burst of bodies take all of it and wait forever
for decode room. A request larger than the whole budget waits until it is empty and then runs
alone, so the memory bound is the budget, or the largest single request the route caps allow.
"""

from __future__ import annotations

import math

from opentelemetry import trace

from app.errors import MemoryBusyError
from app.memory.budget import MIB, SizedBudget
from app.telemetry.metrics import Metrics

# Without a memory limit: thirteen 10 MB images being read at once, far above normal traffic
# (64 requests of 100 KB hold 6 MB).
FALLBACK_BUDGET_BYTES = 128 * MIB
# With a limit: this share of what the loaded model leaves free (the decode budget takes half;
# the last quarter is for queued tensors, batches and the allocator's slack), never below the
# floor.
LIMIT_SHARE = 0.25
MIN_BUDGET_BYTES = 32 * MIB

# What reading, parsing and decoding a body holds at its peak per byte of it, with images that
# decode to nothing (bench/experiments/body_memory.py, bench/results/body_memory.json): the body,
# the copy that joins its chunks or cuts an image out of it, and the decoder's own read. The worst
# case is one image per request (in a batch, the decode threads copy two images at a time): 3.0 for
# /predict and a batch of one (2.05 at four), 3.9-4.9 for the protocol's REST bodies (about 3.1 at
# four), 6.9 for a gRPC message (5.1 at four: the library's buffer, the parsed message, the tensor's
# elements). Rounded up from the single-image figures; a route cannot count its images before it
# reads the body.
SINGLE_IMAGE_HELD = 3.0
BATCH_HELD = 3.0
PROTOCOL_HELD = 5.0
GRPC_HELD = 7.0


def body_budget_bytes(setting: int, *, limit: int | None, baseline: int | None) -> tuple[int, str]:
    """The budget and how it was chosen: SERVING_MAX_BODY_BYTES_IN_FLIGHT when set; else a share
    of the memory limit the loaded model leaves free; else the fallback."""
    if setting > 0:
        return setting, "SERVING_MAX_BODY_BYTES_IN_FLIGHT"
    if limit is None:
        return FALLBACK_BUDGET_BYTES, "no memory limit: fallback"
    share = int((limit - (baseline or 0)) * LIMIT_SHARE)
    return max(MIN_BUDGET_BYTES, share), f"{LIMIT_SHARE:.0%} of (limit {limit} - RSS {baseline})"


class BodyMemory:
    """The request bodies' budget: `reserve` before a body is read, `release` once answered."""

    def __init__(self, setting: int, metrics: Metrics, tracer: trace.Tracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer or trace.NoOpTracer()

        def sizing(limit: int | None, baseline: int | None) -> tuple[int, str]:
            return body_budget_bytes(setting, limit=limit, baseline=baseline)

        self.budget = SizedBudget(
            "body",
            sizing,
            in_flight=metrics.body_memory_in_flight,
            capacity=metrics.body_memory_budget,
        )

    def size(self, *, limit: int | None, baseline: int | None) -> None:
        """Fix the budget once the model is loaded (log line `body memory budget`)."""
        self.budget.size(limit=limit, baseline=baseline)

    async def reserve(self, need: int, deadline: float) -> int:
        """Wait (first come, first served) until `need` bytes fit, within the deadline; returns
        what was reserved, for `release`. More than the whole budget reserves all of it."""
        need = min(need, self.budget.capacity)
        if need <= 0:
            return 0
        if self.budget.try_acquire(need):
            return need
        with self.tracer.start_as_current_span(
            "wait for body memory", attributes={"memory.bytes": need}
        ):
            granted = await self.budget.acquire(need, deadline)
        if granted:
            return need
        self.metrics.rejected.labels(reason="body_memory").inc()
        raise MemoryBusyError(
            f"the request bodies being read hold the body memory budget "
            f"({self.budget.capacity // MIB} MiB, SERVING_MAX_BODY_BYTES_IN_FLIGHT) and this "
            f"one, needing about {math.ceil(need / MIB)} MiB, found no room before its "
            "deadline; retry shortly",
            headers={"Retry-After": "1"},
        )

    def release(self, reserved: int) -> None:
        if reserved:
            self.budget.release(reserved)
