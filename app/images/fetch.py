"""Fetching an image by URL without becoming an SSRF proxy.

- http and https only, no credentials in the URL, no proxies from the environment;
- the address check runs at connect time, on the addresses the name really resolved to, and we
  connect to the address we checked: a DNS answer that changes between check and connect
  (rebinding) cannot slip a private address past it. Every redirect hop connects anew and is
  checked the same way;
- loopback, private, link-local, shared, multicast and reserved addresses are refused unless
  `allow_private` is set or the address is in `allowed_networks`; cloud metadata addresses are
  refused always;
- the size cap applies while streaming (and up front from Content-Length); connect, read and
  total times are bounded.

It uses httpcore (httpx's transport layer) directly because httpcore lets us own the network
backend, which is where the resolve-check-connect step lives.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import anyio
import certifi
import httpcore
import httpx

from app.errors import (
    InvalidUrlError,
    UrlFetchError,
    UrlNotAllowedError,
    UrlTimeoutError,
    UrlTooLargeError,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Awaited with a body's size before it is read (the caller's memory reservation).
RoomFor = Callable[[int], Awaitable[None]]

# Instance metadata services: credentials live there. Never reachable, whatever the settings.
METADATA_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2/32",  # AWS ECS task metadata
        "100.100.100.200/32",  # Alibaba Cloud
        "fd00:ec2::254/128",  # AWS over IPv6
    )
)

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = b"resnet-serving-url-fetch/1"


class AddressPolicy:
    """Which resolved addresses we may connect to."""

    def __init__(self, *, allow_private: bool, allowed_networks: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.allowed_networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allowed_networks
        )

    def check(self, address: IPAddress) -> None:
        """Raise UrlNotAllowedError if `address` is off limits."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in net for net in METADATA_NETWORKS):
            raise UrlNotAllowedError(
                f"the URL resolves to {address}, a cloud metadata address; refused"
            )
        if any(address in net for net in self.allowed_networks):
            return
        if address.is_multicast or address.is_unspecified:
            raise UrlNotAllowedError(f"the URL resolves to {address}, which is not a host")
        if self.allow_private:
            return
        if not address.is_global:
            raise UrlNotAllowedError(
                f"the URL resolves to {address}, a private, loopback or link-local address; "
                "refused (SERVING_ALLOW_PRIVATE_URLS / SERVING_URL_ALLOWED_NETWORKS allow it)"
            )


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check every address, connect to a checked one."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            return [literal]
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise UrlTimeoutError(f"resolving {host!r} timed out") from exc
        except (OSError, UnicodeError) as exc:
            raise UrlFetchError(f"could not resolve host {host!r}") from exc
        seen: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in seen:
                seen.append(address)
        if not seen:
            raise UrlFetchError(f"could not resolve host {host!r}")
        return seen

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        # Any forbidden answer refuses the host: a name that mixes public and private answers
        # is exactly what a rebinding attack looks like.
        for address in addresses:
            self._policy.check(address)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UrlNotAllowedError("unix sockets are not reachable by URL")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str
    final_url: str
    seconds: float


def validate_url(raw: str) -> httpx.URL:
    """Syntax and scheme checks, before any network activity."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidUrlError("the url is empty")
    if len(raw) > 4096:
        raise InvalidUrlError("the url is longer than 4096 characters")
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise InvalidUrlError(f"not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise InvalidUrlError(f"only http and https URLs are fetched, not {url.scheme or 'none'!r}")
    if not url.host:
        raise InvalidUrlError("the URL has no host")
    if url.userinfo:
        raise InvalidUrlError("credentials in URLs are not accepted")
    return url


class UrlFetcher:
    def __init__(
        self,
        *,
        policy: AddressPolicy,
        timeout_s: float,
        max_bytes: int,
        max_redirects: int,
        max_connections: int = 32,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=GuardedNetworkBackend(policy),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _request(self, url: httpx.URL) -> httpcore.Request:
        port = url.port
        host_header = url.raw_host + (b":%d" % port if port is not None else b"")
        timeout = self.timeout_s
        return httpcore.Request(
            b"GET",
            httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=port, target=url.raw_path),
            headers=[
                (b"Host", host_header),
                (b"User-Agent", _USER_AGENT),
                (b"Accept", b"image/*"),
                (b"Accept-Encoding", b"identity"),
            ],
            extensions={
                "timeout": {
                    "connect": min(5.0, timeout),
                    "read": timeout,
                    "write": timeout,
                    "pool": timeout,
                }
            },
        )

    async def fetch(self, raw_url: str, *, room_for: RoomFor | None = None) -> FetchedImage:
        """Download `raw_url`, following checked redirects; bytes capped at `max_bytes`.
        `room_for(n)` is awaited before the body is read, with its declared length (the cap
        when it declares none), for the caller to reserve memory: it may wait or raise."""
        started = time.perf_counter()
        url = validate_url(raw_url)
        try:
            async with asyncio.timeout(self.timeout_s):
                for _ in range(self.max_redirects + 1):
                    result = await self._fetch_once(url, room_for)
                    if isinstance(result, httpx.URL):
                        url = result
                        continue
                    data, content_type = result
                    return FetchedImage(data, content_type, str(url), time.perf_counter() - started)
        except TimeoutError as exc:
            raise UrlTimeoutError(
                f"fetching the URL took longer than {self.timeout_s:g}s "
                "(SERVING_URL_FETCH_TIMEOUT_S)"
            ) from exc
        except httpcore.TimeoutException as exc:
            raise UrlTimeoutError(f"the URL's server was too slow: {type(exc).__name__}") from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise UrlFetchError(f"could not fetch the URL: {type(exc).__name__}: {exc}") from exc
        except ssl.SSLError as exc:
            raise UrlFetchError(f"TLS failed for the URL: {exc.reason or exc}") from exc
        raise UrlFetchError(f"more than {self.max_redirects} redirects (SERVING_URL_MAX_REDIRECTS)")

    async def _fetch_once(
        self, url: httpx.URL, room_for: RoomFor | None
    ) -> httpx.URL | tuple[bytes, str]:
        response = await self._pool.handle_async_request(self._request(url))
        try:
            headers = _headers(response.headers)
            if response.status in _REDIRECT_STATUSES:
                location = headers.get("location")
                if not location:
                    raise UrlFetchError(f"HTTP {response.status} redirect without a Location")
                return validate_url(urljoin(str(url), location))
            if response.status != 200:
                raise UrlFetchError(f"the URL answered HTTP {response.status}, not 200")
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise UrlTooLargeError(
                    f"the URL's content is {declared} bytes; the limit is {self.max_bytes} "
                    "(SERVING_MAX_UPLOAD_BYTES)"
                )
            if room_for is not None:
                await room_for(int(declared) if declared and declared.isdigit() else self.max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_stream():
                size += len(chunk)
                if size > self.max_bytes:
                    raise UrlTooLargeError(
                        f"the URL's content exceeds {self.max_bytes} bytes "
                        "(SERVING_MAX_UPLOAD_BYTES); download stopped"
                    )
                chunks.append(chunk)
            return b"".join(chunks), headers.get("content-type", "")
        finally:
            await response.aclose()


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
