"""Single-flight: identical images (the same key) arriving together are inferred once. The
first request leads and does the work; the others wait for its answer, each within its own
deadline.

A leader that fails because of the image itself (a 4xx: invalid image, too large ...) fails its
followers with the same error: the same bytes would fail the same way. A leader that fails for
its own reasons (its deadline, the memory budget, its client going away, a server fault) does
not: the first follower to notice takes the lead and tries itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.errors import CLIENT_CLOSED, DeadlineExceededError, ServingError

T = TypeVar("T")


@dataclass(frozen=True)
class _Outcome(Generic[T]):
    # Carried as a result, not set as the future's exception: a leader failing with nobody
    # waiting must not leave an "exception never retrieved" behind.
    value: T | None = None
    error: BaseException | None = None


def _shared(error: BaseException) -> bool:
    """Whether followers fail with the leader's error: the image's fault, not the leader's."""
    return (
        isinstance(error, ServingError)
        and 400 <= error.status_code < 500
        and error.status_code != CLIENT_CLOSED
    )


class Flights:
    def __init__(self, on_coalesced: Callable[[], None] | None = None) -> None:
        # The value type differs per call site, not per instance: the futures hold Any.
        self._running: dict[str, asyncio.Future[_Outcome[Any]]] = {}
        self._on_coalesced = on_coalesced

    def __len__(self) -> int:
        return len(self._running)

    async def run(
        self, key: str, work: Callable[[], Awaitable[T]], deadline: float | None
    ) -> tuple[T, bool]:
        """`work()`'s result and True when this call did the work, or the identical leader's
        result and False. `deadline`: time.monotonic() by which a follower gives up (504)."""
        while True:
            running = self._running.get(key)
            if running is None:
                return await self._lead(key, work), True
            if self._on_coalesced is not None:
                self._on_coalesced()
            outcome = await self._follow(running, deadline)
            if outcome.error is None:
                return outcome.value, False  # type: ignore[return-value]
            if _shared(outcome.error):
                raise outcome.error
            # The leader failed for its own reasons: try again, leading if nobody else does.

    async def _lead(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        future: asyncio.Future[_Outcome[Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            value = await work()
        except BaseException as exc:
            future.set_result(_Outcome(error=exc))
            raise
        else:
            future.set_result(_Outcome(value=value))
            return value
        finally:
            if self._running.get(key) is future:
                del self._running[key]

    async def _follow(
        self, running: asyncio.Future[_Outcome[Any]], deadline: float | None
    ) -> _Outcome[Any]:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(_LATE)
        try:
            # shield: a follower that gives up (deadline, client gone) leaves the leader be.
            async with asyncio.timeout(remaining):
                return await asyncio.shield(running)
        except TimeoutError:
            raise DeadlineExceededError(_LATE) from None


_LATE = (
    "the request's deadline passed while an identical image, sent just before it, was being "
    "classified"
)
