"""What a request lets the cache do, from its `Cache-Control` header (HTTP, or the gRPC
metadata key of the same name)."""

from __future__ import annotations

from enum import StrEnum


class CachePolicy(StrEnum):
    USE = "use"  # read; on a miss, infer and write
    REFRESH = "refresh"  # `no-cache`: infer afresh, and the answer replaces the entry
    BYPASS = "bypass"  # `no-store`: neither read nor write


def from_cache_control(value: str | None) -> CachePolicy:
    """RFC 9111's request directives that concern us; the others (max-age, ...) are ignored.
    `no-store` wins over `no-cache` when both are sent."""
    if not value:
        return CachePolicy.USE
    directives = {part.split("=", 1)[0].strip().lower() for part in value.split(",")}
    if "no-store" in directives:
        return CachePolicy.BYPASS
    if "no-cache" in directives:
        return CachePolicy.REFRESH
    return CachePolicy.USE
