"""SERVING_CACHE_REDIS_URL: its grammar, checked at start-up, and the form that may be shown
(logs, /model, errors): never with its password."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = ("redis", "rediss")


@dataclass(frozen=True)
class RedisAddress:
    scheme: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def shown(self) -> str:
        """The URL without its credentials: what logs and /model say."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS. Raises ValueError
    with a message that never contains the URL (it may hold a password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError("is not a URL (redis://[:password@]host:port/db)") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("must start with redis:// or rediss:// (TLS)")
    if not parts.hostname:
        raise ValueError("names no host (redis://[:password@]host:port/db)")
    if parts.query or parts.fragment:
        raise ValueError("takes no query or fragment: the cache sets its own timeouts")
    path = parts.path.lstrip("/")
    if path and not (path.isdigit() and int(path) < 2**16):
        raise ValueError("database must be a number (the path, e.g. /0)")
    return RedisAddress(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or 6379,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )
