"""The in-process tier: least recently used entries go first, bounded by the bytes they hold
(SERVING_CACHE_BYTES), not by their number. Used from the event loop only: no lock."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from app.cache.entry import CachedScores


class LocalTier:
    def __init__(
        self, capacity_bytes: int, on_change: Callable[[int, int], None] | None = None
    ) -> None:
        """`on_change(bytes, entries)` after every change (the gauges)."""
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[str, CachedScores] = OrderedDict()
        self._bytes = 0
        self._on_change = on_change

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedScores | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedScores) -> None:
        size = entry.held_bytes + len(key)
        if size > self.capacity_bytes:
            return  # larger than the whole tier: keeping it would only empty the tier
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.held_bytes + len(key)
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.capacity_bytes:
            evicted_key, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.held_bytes + len(evicted_key)
        self._changed()

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._bytes, len(self._entries))
