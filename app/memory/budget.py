"""A budget of bytes shared by concurrent requests: reserve before allocating, give back after.

Used twice, for two different kinds of memory that must never wait on each other (one request
holding the first while it waits for the second would let a burst deadlock): the decode budget
(app/images/decoder.py, decoded pixels) and the body budget (app/memory/bodies.py, request bodies).
Waiters are served first come, first served, so a large reservation is not starved by a stream
of small ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

log = logging.getLogger(__name__)

MIB = 1 << 20
# A budget's size and how it was chosen, from the container's memory limit and the RSS of the
# loaded model (None: not known, or not yet).
Sizing = Callable[[int | None, int | None], tuple[int, str]]


@dataclass(eq=False)
class _Waiter:
    need: int
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class MemoryBudget:
    """Bytes reserved by work in flight. Thread-safe: any thread may take and give back
    reservations (decode threads do); waiting happens on the event loop."""

    def __init__(self, capacity: int, on_change: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        self._in_use = 0
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._on_change = on_change

    @property
    def in_use(self) -> int:
        return self._in_use

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._in_use)

    def try_acquire(self, need: int) -> bool:
        """Reserve at once if it fits and nobody waits ahead; from any thread."""
        with self._lock:
            if self._waiters or self._in_use + need > self.capacity:
                return False
            self._in_use += need
            self._changed()
            return True

    def release(self, need: int) -> None:
        """Give a reservation back and hand the room to waiters in order; from any thread."""
        with self._lock:
            self._in_use -= need
            granted = self._grant_locked()
            self._changed()
        for waiter in granted:
            waiter.loop.call_soon_threadsafe(self._deliver, waiter)

    def _grant_locked(self) -> list[_Waiter]:
        granted = []
        while self._waiters and self._in_use + self._waiters[0].need <= self.capacity:
            waiter = self._waiters.popleft()
            self._in_use += waiter.need
            granted.append(waiter)
        return granted

    def _deliver(self, waiter: _Waiter) -> None:
        if waiter.future.done():  # it gave up (deadline, disconnect) after being granted
            self.release(waiter.need)
        else:
            waiter.future.set_result(None)

    async def acquire(self, need: int, deadline: float | None) -> bool:
        """Wait for `need` bytes until `deadline` (time.monotonic); False when it passed."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._waiters and self._in_use + need <= self.capacity:
                self._in_use += need
                self._changed()
                return True
            waiter = _Waiter(need, loop.create_future(), loop)
            self._waiters.append(waiter)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
            return True
        except TimeoutError:
            self._abandon(waiter)
            return False
        except BaseException:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: _Waiter) -> None:
        with self._lock:
            queued = waiter in self._waiters
            if queued:
                self._waiters.remove(waiter)
            granted = self._grant_locked()  # the head may have left: others may fit now
            self._changed()
        for other in granted:
            other.loop.call_soon_threadsafe(self._deliver, other)
        if not queued and waiter.future.done() and not waiter.future.cancelled():
            self.release(waiter.need)  # granted just as it gave up: give it back
        # Granted but not yet delivered: `_deliver` finds the future cancelled and releases.


class SizedBudget(MemoryBudget):
    """A budget sized from the container's memory limit once the model is loaded (the RSS then
    is the baseline its free share is computed from), with its two gauges and the start-up log
    line that says how it was chosen: the decode budget and the body budget are two of these."""

    def __init__(self, name: str, sizing: Sizing, *, in_flight: Gauge, capacity: Gauge) -> None:
        self.name = name
        self._sizing = sizing
        self._capacity_gauge = capacity
        first, _ = sizing(None, None)
        super().__init__(first, on_change=in_flight.set)
        capacity.set(first)

    def size(self, *, limit: int | None, baseline: int | None) -> None:
        capacity, how = self._sizing(limit, baseline)
        self.capacity = capacity
        self._capacity_gauge.set(capacity)
        log.info(
            f"{self.name} memory budget",
            extra={
                "budget_bytes": capacity,
                "budget_mib": round(capacity / MIB),
                "memory_limit_bytes": limit,
                "baseline_rss_bytes": baseline,
                "chosen_by": how,
            },
        )
