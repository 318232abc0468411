"""The shared tier: one Redis that every replica reads and writes (SERVING_CACHE_REDIS_URL).

Redis is an optimisation, never a dependency: every call is bounded by a timeout of
milliseconds (SERVING_CACHE_REDIS_TIMEOUT_MS, for connecting and for each command), redis-py's
own retries are off (a retry would double the wait), and a circuit breaker stops asking a Redis
that keeps failing. A PING every few seconds keeps `prediction_cache_redis_up` true and closes
the breaker once Redis answers again. A failure reaches the caller as `RedisTierError`, which
the cache turns into a miss; writes go out in the background and are dropped when too many are
pending, so a slow Redis never holds an answer back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from app.cache.breaker import CircuitBreaker
from app.cache.redis_url import RedisAddress

log = logging.getLogger(__name__)

T = TypeVar("T")

PING_INTERVAL_S = 5.0
MAX_PENDING_WRITES = 256


class RedisTierError(Exception):
    """Redis did not answer usefully (down, slow, refused, breaker open): a miss."""


class RedisTier:
    def __init__(
        self,
        address: RedisAddress,
        *,
        password: str | None,
        timeout_s: float,
        ttl_s: int,
        observe: Callable[[str, float], None] | None = None,
        on_up: Callable[[bool], None] | None = None,
        breaker: CircuitBreaker | None = None,
        ping_interval_s: float = PING_INTERVAL_S,
    ) -> None:
        """`observe(op, seconds)` for each call's latency; `on_up(bool)` whenever Redis is
        seen answering or failing (the gauge)."""
        self.address = address
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.breaker = breaker or CircuitBreaker()
        self.ping_interval_s = ping_interval_s
        self._observe = observe
        self._on_up = on_up
        self._up: bool | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._pinger: asyncio.Task[None] | None = None
        self._client = aioredis.Redis(
            host=address.host,
            port=address.port,
            db=address.db,
            username=address.username,
            password=password if password else address.password,
            ssl=address.tls,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name="resnet-serving",
        )
        # Beyond the socket timeouts (which do not cover name resolution, for one): the most
        # any call may take before it counts as failed.
        self._guard_s = 2 * timeout_s + 0.05

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """One PING now (a Redis that does not answer is a warning: the service serves without
        it, and uses it as soon as it answers), then one every `ping_interval_s`."""
        try:
            await self._call("ping", lambda: self._client.ping())
        except RedisTierError as exc:
            log.warning(
                "the prediction cache's Redis (%s, SERVING_CACHE_REDIS_URL) does not answer "
                "(%s): serving with the in-process tier alone until it does",
                self.address.shown(),
                exc,
            )
        self._pinger = asyncio.create_task(self._ping_forever(), name="redis-ping")

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._client.aclose()

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            with contextlib.suppress(RedisTierError):
                # The ping is the breaker's probe too: it goes out even while the breaker is open.
                await self._call("ping", lambda: self._client.ping(), probe=True)

    # --- calls -------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value = await self._call("get", lambda: self._client.get(key))
        if value is not None and not isinstance(value, bytes):
            raise RedisTierError(f"GET returned {type(value).__name__}")
        return value

    def put(self, key: str, value: bytes) -> None:
        """SET with the TTL, in the background; dropped when too many writes are pending (a slow
        Redis) or the breaker is open."""
        if len(self._writes) >= MAX_PENDING_WRITES or not self.breaker.closed:
            return
        task = asyncio.create_task(self._set(key, value))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _set(self, key: str, value: bytes) -> None:
        with contextlib.suppress(RedisTierError):
            await self._call("set", lambda: self._client.set(key, value, ex=self.ttl_s))

    async def _call(self, op: str, call: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        if not probe and not self.breaker.allow():
            raise RedisTierError("circuit open: Redis failed recently")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._guard_s):
                result = await call()
        except ResponseError as exc:
            # Redis answered (a wrong type under the key, say): the server is fine.
            self._seen(True)
            raise RedisTierError(f"{op}: {type(exc).__name__}: {exc}") from None
        except (RedisError, OSError, TimeoutError) as exc:
            self._seen(False)
            raise RedisTierError(f"{op}: {type(exc).__name__}: {exc}") from None
        finally:
            if self._observe is not None:
                self._observe(op, time.perf_counter() - started)
        self._seen(True)
        return result

    def _seen(self, answering: bool) -> None:
        if answering:
            self.breaker.success()
        else:
            self.breaker.failure()
        if answering != self._up:
            if self._up is not None:
                if answering:
                    log.info("the prediction cache's Redis (%s) answers again",
                             self.address.shown())  # fmt: skip
                else:
                    log.warning(
                        "the prediction cache's Redis (%s) fails: lookups are misses until it "
                        "answers again",
                        self.address.shown(),
                    )
            self._up = answering
            if self._on_up is not None:
                self._on_up(answering)

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.address.shown(),
            "up": bool(self._up),
            "ttl_s": self.ttl_s,
            "timeout_ms": round(self.timeout_s * 1000, 3),
        }
