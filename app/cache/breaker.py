"""A circuit breaker for the shared tier: after a few failures in a row, Redis is not asked at
all for a short while (every lookup is a miss at once, instead of each request waiting out a
timeout against a hung server); then one call at a time probes it, and the first success
closes the breaker again. With the periodic PING (app/cache/redis_tier.py), a Redis that comes
back is used again within `open_s` plus one ping interval."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures_to_open: int = 3,
        open_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def closed(self) -> bool:
        return self._open_until is None

    def allow(self) -> bool:
        """Whether a call may go to Redis now. While open: no, until `open_s` has passed; then
        one probe at a time (half-open) until one succeeds or fails."""
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._open_until = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failures_to_open:
            self._open_until = self._clock() + self.open_s
        self._probing = False
