"""URL fetching against a real local HTTP server: success, redirects (checked at every hop),
private and metadata addresses, slow and oversized responses."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import anyio
import pytest
from fastapi.testclient import TestClient

from app.errors import UrlNotAllowedError
from app.images.fetch import AddressPolicy, UrlFetcher
from app.main import create_app
from conftest import make_settings, wait_ready
from helpers.images import encode, photo

CAT = encode(photo("chelsea"), "JPEG", quality=85)
LIMIT = 256 * 1024
TIMEOUT_S = 1.5


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: bytes, content_type: str = "image/jpeg") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parsed = urlparse(self.path)
        query = parse_qs(parsed.query)
        path = parsed.path
        if path == "/cat.jpg":
            self._send(200, CAT)
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/slow-headers":
            time.sleep(TIMEOUT_S * 3)
            self._send(200, CAT)
        elif path == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(CAT)))
            self.end_headers()
            try:
                for i in range(0, len(CAT), 1024):
                    self.wfile.write(CAT[i : i + 1024])
                    self.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should
        elif path == "/large-declared":
            self._send(200, b"\0" * (LIMIT + 1))
        elif path == "/large-streamed":
            # No Content-Length: the cap has to hold while streaming.
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 64 * 1024)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif path == "/html":
            self._send(200, b"<html>hello</html>", "text/html")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def url_client() -> Iterator[TestClient]:
    # Only the test origin's address is exempt from the private-address block.
    settings = make_settings(
        url_allowed_networks=["127.0.0.1/32"],
        url_fetch_timeout_s=TIMEOUT_S,
        max_upload_bytes=LIMIT,
        url_max_redirects=3,
    )
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as test_client:
        wait_ready(test_client)
        yield test_client


def post_url(client: TestClient, url: str) -> Any:
    return client.post("/predict", json={"url": url})


def error_code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_fetches_and_classifies(url_client: TestClient, origin: str) -> None:
    response = post_url(url_client, f"{origin}/cat.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 5
    assert body["timing_ms"]["fetch"] > 0
    assert body["image"]["format"] == "JPEG"


def test_follows_a_redirect_to_an_allowed_place(url_client: TestClient, origin: str) -> None:
    response = post_url(url_client, f"{origin}/redirect?to=/cat.jpg")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "target",
    [
        "http://10.255.255.1/cat.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2/cat.jpg",
        "http://[fd00:ec2::254]/",
    ],
)
def test_redirect_to_a_private_address_is_refused(
    url_client: TestClient, origin: str, target: str
) -> None:
    response = post_url(url_client, f"{origin}/redirect?to={target}")
    assert response.status_code == 400, response.text
    assert error_code(response) == "url_not_allowed"


# What the client gets when the origin misbehaves: the status, the stable error code, and a
# word of the message where the code alone does not say which failure it was.
ORIGIN_FAILURES = [
    pytest.param("/redirect?to=file:///etc/passwd", 400, "invalid_url", "", id="redirect-scheme"),
    pytest.param("/loop", 502, "url_fetch_failed", "redirects", id="redirect-loop"),
    pytest.param("/missing.jpg", 502, "url_fetch_failed", "404", id="error-status"),
    # The origin holds its headers (or trickles its body) far longer than the fetch timeout:
    # a 504 url_fetch_timeout, and not the origin's answer, is the proof that the timeout cut it.
    pytest.param("/slow-headers", 504, "url_fetch_timeout", "", id="slow-headers"),
    pytest.param("/slow-body", 504, "url_fetch_timeout", "", id="trickling-body"),
    pytest.param("/large-declared", 413, "url_content_too_large", "", id="declared-oversize"),
    # No Content-Length: the cap holds while the body streams in.
    pytest.param("/large-streamed", 413, "url_content_too_large", "", id="streamed-oversize"),
    pytest.param("/html", 400, "invalid_image", "", id="html-page"),
]


@pytest.mark.parametrize(("path", "status", "code", "says"), ORIGIN_FAILURES)
def test_a_misbehaving_origin_gets_its_error(
    url_client: TestClient, origin: str, path: str, status: int, code: str, says: str
) -> None:
    response = post_url(url_client, f"{origin}{path}")
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert says in response.json()["error"]["message"]


def test_unreachable_port_is_502(url_client: TestClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        response = post_url(url_client, f"http://127.0.0.1:{port}/cat.jpg")
    assert response.status_code == 502
    assert error_code(response) == "url_fetch_failed"


def test_unresolvable_host_is_502(url_client: TestClient) -> None:
    response = post_url(url_client, "http://no-such-host.invalid/cat.jpg")
    assert response.status_code == 502
    assert error_code(response) == "url_fetch_failed"


# --- the address policy --------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.5", "172.16.3.4", "192.168.0.1", "169.254.1.1", "100.64.0.1",
     "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "0.0.0.0", "224.0.0.1"],
)  # fmt: skip
def test_policy_refuses_non_public_addresses(address: str) -> None:
    with pytest.raises(UrlNotAllowedError):
        AddressPolicy(allow_private=False).check(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_policy_allows_public_addresses(address: str) -> None:
    AddressPolicy(allow_private=False).check(ipaddress.ip_address(address))


def test_allow_private_still_refuses_metadata() -> None:
    policy = AddressPolicy(allow_private=True, allowed_networks=["169.254.0.0/16"])
    policy.check(ipaddress.ip_address("10.0.0.1"))
    with pytest.raises(UrlNotAllowedError, match="metadata"):
        policy.check(ipaddress.ip_address("169.254.169.254"))


def test_allowed_networks_exempt_only_themselves() -> None:
    policy = AddressPolicy(allow_private=False, allowed_networks=["10.20.0.0/16"])
    policy.check(ipaddress.ip_address("10.20.1.1"))
    with pytest.raises(UrlNotAllowedError):
        policy.check(ipaddress.ip_address("10.21.1.1"))


@pytest.mark.anyio
async def test_check_uses_the_resolved_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A public-looking name that resolves to a private address is refused at connect time."""

    async def fake_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(anyio, "getaddrinfo", fake_getaddrinfo)  # what url_fetch calls
    fetcher = UrlFetcher(
        policy=AddressPolicy(allow_private=False), timeout_s=2, max_bytes=LIMIT, max_redirects=0
    )
    try:
        with pytest.raises(UrlNotAllowedError, match=r"10\.0\.0\.7"):
            await fetcher.fetch("http://images.example.com/cat.jpg")
    finally:
        await fetcher.aclose()
