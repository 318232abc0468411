"""The prediction cache as the request pipeline sees it: a key for an image's bytes, a lookup
through the tiers (in process, then Redis, whose hit also fills the in-process tier), a store
after inference, and single-flight for identical images in flight together.

It is bound to the loaded model's identity (`bind`) before the first request: keys and values
both carry it. Nothing here raises to a request because of the cache: Redis failing is a miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from app.cache.entry import BadEntryError, CachedScores, decode, encode
from app.cache.flights import Flights
from app.cache.identity import ModelIdentity, image_key
from app.cache.local import LocalTier
from app.cache.redis_tier import RedisTier, RedisTierError
from app.cache.redis_url import parse_redis_url
from app.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# Hashing larger images leaves the event loop (hashlib releases the GIL): ~0.5 ms per MB.
HASH_OFF_LOOP_BYTES = 256 * 1024


@dataclass(frozen=True)
class Hit:
    entry: CachedScores
    tier: str  # local or redis


class PredictionCache:
    def __init__(self, *, capacity_bytes: int, redis: RedisTier | None, metrics: Metrics) -> None:
        self.metrics = metrics
        self.local = (
            LocalTier(capacity_bytes, on_change=self._local_changed) if capacity_bytes > 0 else None
        )
        self.redis = redis
        self.flights = Flights(on_coalesced=metrics.cache_coalesced.inc)
        self._identity: ModelIdentity | None = None
        self._fingerprint = b""

    @property
    def enabled(self) -> bool:
        """Whether any tier is configured (SERVING_CACHE_BYTES > 0 or a Redis URL)."""
        return self.local is not None or self.redis is not None

    @property
    def capacity_bytes(self) -> int:
        return self.local.capacity_bytes if self.local is not None else 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.redis is not None:
            await self.redis.start()

    def bind(self, identity: ModelIdentity) -> None:
        """The loaded model: entries of any other model are never served."""
        if identity != self._identity and self.local is not None:
            self.local.clear()
        self._identity = identity
        self._fingerprint = identity.fingerprint()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    # --- the pipeline's calls ----------------------------------------------------------------

    async def key_for(self, data: bytes) -> str:
        if len(data) > HASH_OFF_LOOP_BYTES:
            digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        else:
            digest = hashlib.sha256(data).hexdigest()
        return image_key(self._fingerprint, digest)

    async def lookup(self, key: str) -> Hit | None:
        if self.local is not None:
            entry = self.local.get(key)
            self._count("local", "hit" if entry is not None else "miss")
            if entry is not None:
                return Hit(entry, "local")
        if self.redis is None or self._identity is None:
            return None
        try:
            raw = await self.redis.get(key)
        except RedisTierError:
            self._count("redis", "error")
            return None
        if raw is None:
            self._count("redis", "miss")
            return None
        try:
            entry = decode(raw, self._fingerprint, self._identity.num_classes)
        except BadEntryError as exc:
            # Replaced by this model's answer once the image is inferred.
            log.warning("prediction cache: the value under %s is not usable (%s)", key, exc)
            self._count("redis", "error")
            return None
        self._count("redis", "hit")
        if self.local is not None:
            self.local.put(key, entry)
        return Hit(entry, "redis")

    def store(self, key: str, entry: CachedScores) -> None:
        if self.local is not None:
            self.local.put(key, entry)
        if self.redis is not None and self._identity is not None:
            self.redis.put(key, encode(entry, self._fingerprint))

    # --- reporting -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """For /model: what is configured and held, never a password."""
        return {
            "enabled": self.enabled,
            "in_process": None
            if self.local is None
            else {
                "capacity_bytes": self.local.capacity_bytes,
                "held_bytes": self.local.held_bytes,
                "entries": len(self.local),
            },
            "redis": None if self.redis is None else self.redis.describe(),
        }

    def _count(self, tier: str, result: str) -> None:
        self.metrics.cache_requests.labels(tier=tier, result=result).inc()

    def _local_changed(self, held: int, entries: int) -> None:
        self.metrics.cache_bytes.set(held)
        self.metrics.cache_entries.set(entries)


def build_cache(
    *,
    capacity_bytes: int,
    redis_url: str,
    redis_password: str,
    timeout_s: float,
    ttl_s: int,
    metrics: Metrics,
) -> PredictionCache:
    """The cache the settings ask for: `capacity_bytes` 0 = no in-process tier, `redis_url`
    empty = no shared one (the URL was checked when the settings were read)."""
    redis = None
    if redis_url:
        up = metrics.cache_redis_up()

        def observe(op: str, seconds: float) -> None:
            metrics.cache_redis_duration.labels(op=op).observe(seconds)

        redis = RedisTier(
            parse_redis_url(redis_url),
            password=redis_password or None,
            timeout_s=timeout_s,
            ttl_s=ttl_s,
            observe=observe,
            on_up=lambda answering: up.set(1 if answering else 0),
        )
    return PredictionCache(capacity_bytes=capacity_bytes, redis=redis, metrics=metrics)
