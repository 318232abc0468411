"""A budget of bytes shared by concurrent requests: reserve before allocating, give back after.

Used twice, for two different kinds of memory that must never wait on each other (one request
holding the first while it waits for the second would let a burst deadlock): the decode budget
(app/decoding.py, decoded pixels) and the body budget (app/body_memory.py, request bodies).
Waiters are served first come, first served, so a large reservation is not starved by a stream
of small ones.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


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
