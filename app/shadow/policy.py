"""What is shadowed, and where to: SERVING_SHADOW_URL's grammar, the sampling
(SERVING_SHADOW_PERCENT), and the rule that keeps two versions shadowing each other from
looping (a request that is itself a shadow copy, `X-Shadow: 1`, is never copied again)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # annotations only: the settings module imports this one's grammar
    from app.settings.config import Settings

# The header a shadow copy carries (value "1"): the other version answers it as any request,
# and never shadows it again.
SHADOW_HEADER = "X-Shadow"
EXAMPLE = "http://rel-resnet-serving-canary:8000"


def parse_target(raw: str) -> str:
    """SERVING_SHADOW_URL: the base URL of the other version's HTTP port, `http` or `https`,
    with a host, optionally a port and a path prefix (a router's), no query or fragment.
    Returns it without a trailing slash; raises ValueError naming the rule."""
    text = raw.strip()
    rule = f"must be the http:// or https:// base URL of the other version, e.g. {EXAMPLE}"
    if any(char.isspace() for char in text):
        raise ValueError(f"{rule}; it holds a space")
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ValueError(rule) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(rule)
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError(f"{rule}; the port is out of range")
    if url.query or url.fragment or "?" in text or "#" in text:
        raise ValueError(f"{rule}; no ?query or #fragment (/predict is added to it)")
    return text.rstrip("/")


def without_credentials(url: str) -> str:
    """The URL as it may be shown (/model, logs): its user and password left out."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(userinfo=b"")) if parsed.userinfo else url


def is_shadow_copy(header: str | None) -> bool:
    """A request whose `X-Shadow` header is set (to anything but empty or `0`) is a copy."""
    return header is not None and header.strip() not in ("", "0")


@dataclass(frozen=True)
class ShadowPolicy:
    url: str  # base URL, no trailing slash
    percent: float  # 0-100
    concurrency: int  # copies in flight at most; more are dropped
    timeout_s: float  # the whole call, connect to the last byte

    @classmethod
    def from_settings(cls, settings: Settings) -> ShadowPolicy | None:
        """None when SERVING_SHADOW_URL is empty (off, whatever the percentage)."""
        if not settings.shadow_url:
            return None
        return cls(
            url=settings.shadow_url,
            percent=settings.shadow_percent,
            concurrency=settings.shadow_concurrency,
            timeout_s=settings.shadow_timeout_s,
        )

    @property
    def predict_url(self) -> str:
        return f"{self.url}/predict"

    def wants(self, shadow_header: str | None, draw: float) -> bool:
        """Whether one answered /predict is copied: never a copy itself; else with probability
        percent / 100, `draw` being uniform in [0, 1)."""
        if is_shadow_copy(shadow_header):
            return False
        return draw * 100.0 < self.percent
