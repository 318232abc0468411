"""The body memory budget (app/memory/bodies.py): every request with a body reserves what reading
and parsing it will hold before a byte is read, and an image URL reserves its download the same
way. A request that finds no room waits within its deadline, then gets 503 `memory_busy` with
Retry-After; one larger than the whole budget waits until it is empty, then runs alone.

Against a real server process with a 1 MiB budget: a client that sends its headers and then
stalls keeps its reservation held (the reservation comes before the body is read), which is
how a burst of slow large uploads would hold the memory."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from app.errors import MemoryBusyError
from app.memory.bodies import (
    FALLBACK_BUDGET_BYTES,
    GRPC_HELD,
    MIN_BUDGET_BYTES,
    PROTOCOL_HELD,
    SINGLE_IMAGE_HELD,
    BodyMemory,
    body_budget_bytes,
)
from app.telemetry.metrics import Metrics
from harness.big_images import padded_png
from helpers.metrics import samples_of
from helpers.process import ManagedProcess, app_process, free_port

MIB = 1 << 20
BUDGET = 1 * MIB
HELD = 900_000  # what the stalled upload reserves (/predict: its Content-Length x 3)
STALLED: list[int | None] = []  # every stalled upload of this module's tests


# --- sizing and the reservation, in process ------------------------------------------------------


def test_the_budget_is_the_setting_or_a_quarter_of_what_the_limit_leaves() -> None:
    assert body_budget_bytes(5 * MIB, limit=None, baseline=None) == (
        5 * MIB,
        "SERVING_MAX_BODY_BYTES_IN_FLIGHT",
    )
    assert body_budget_bytes(0, limit=None, baseline=None)[0] == FALLBACK_BUDGET_BYTES
    assert body_budget_bytes(0, limit=2048 * MIB, baseline=1024 * MIB)[0] == 256 * MIB
    assert body_budget_bytes(0, limit=1100 * MIB, baseline=1024 * MIB)[0] == MIN_BUDGET_BYTES


@pytest.mark.anyio
async def test_a_request_larger_than_the_budget_waits_for_all_of_it_then_runs_alone() -> None:
    memory = BodyMemory(100, Metrics())
    small = await memory.reserve(30, time.monotonic() + 5)
    big = asyncio.ensure_future(memory.reserve(1000, time.monotonic() + 5))
    await asyncio.sleep(0.05)
    assert not big.done()  # 30 of 100 held: it waits for the whole budget
    memory.release(small)
    assert await big == 100  # reserved all of it, not more than there is
    with pytest.raises(MemoryBusyError, match="no room before its deadline"):
        await memory.reserve(1, time.monotonic() + 0.05)
    memory.release(100)
    assert memory.budget.in_use == 0


# --- a real server with a 1 MiB budget -------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    env = {
        "SERVING_MODEL_NAME": "resnet18",
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_MAX_BODY_BYTES_IN_FLIGHT": str(BUDGET),
        "SERVING_ALLOW_PRIVATE_URLS": "true",  # the image server below is on loopback
        "SERVING_LOG_FORMAT": "json",
        "SERVING_GRPC_PORT": str(free_port()),
        # A gRPC call's wait for memory ends at its deadline, the client's capped by this; under
        # the client's own (30 s below), so the refusal reaches the client as UNAVAILABLE.
        "SERVING_MAX_REQUEST_TIMEOUT_S": "5",
        "SERVING_REQUEST_TIMEOUT_S": "5",
    }
    log = tmp_path_factory.mktemp("body-memory") / "server.log"
    with app_process(env, log_path=log) as proc:
        proc.wait_ready()
        yield proc


def metric(server: ManagedProcess, key: str) -> float:
    """A sample by helpers.metrics' key ('name{labels}'); 0 when absent."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return samples_of(text).get(key, 0.0)


def in_flight(server: ManagedProcess) -> float:
    return metric(server, "body_memory_in_flight_bytes{}")


def rejected(server: ManagedProcess) -> float:
    return metric(server, 'rejected_requests_total{reason="body_memory"}')


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def stalled_upload(server: ManagedProcess, reserving: int | None) -> Iterator[None]:
    """POST /predict's headers and the start of a body, then nothing: the server has reserved
    the body's memory (`reserving` bytes) and waits for the rest. None: chunked, without a
    Content-Length, which reserves the route's cap (at most the whole budget)."""
    length = None if reserving is None else int(reserving / SINGLE_IMAGE_HELD)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n{framing}\r\n"
        "X-Request-Timeout: 60\r\n\r\n"
    ).encode()
    start = b"\x89PNG" + bytes(1020)
    if length is None:
        start = f"{len(start):x}\r\n".encode() + start + b"\r\n"
    STALLED.append(length)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + start)
        held = BUDGET if reserving is None else reserving
        wait_until(lambda: in_flight(server) >= held, "the stalled upload's reservation")
        yield
    wait_until(lambda: in_flight(server) == 0, "the reservation to be given back")


def post(server: ManagedProcess, body: bytes, timeout_s: str) -> httpx.Response:
    headers = {"content-type": "image/png", "X-Request-Timeout": timeout_s}
    return httpx.post(f"{server.base_url}/predict", content=body, headers=headers, timeout=60)


def test_a_body_that_finds_no_room_is_503_memory_busy_then_served_once_room_frees(
    server: ManagedProcess,
) -> None:
    body = padded_png(300_000)  # 900 KB held + 3 x 300 KB > 1 MiB
    small = padded_png(40_000)
    assert SINGLE_IMAGE_HELD * len(small) < BUDGET - HELD
    before = rejected(server)
    with stalled_upload(server, HELD):
        refused = post(server, body, "0.5")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "memory_busy"
        assert "SERVING_MAX_BODY_BYTES_IN_FLIGHT" in refused.json()["error"]["message"]
        assert refused.headers["Retry-After"] == "1"
        assert post(server, small, "5").status_code == 200  # a small one fits
    assert rejected(server) == before + 1
    assert post(server, body, "5").status_code == 200


def test_a_body_waits_for_room_within_its_deadline(server: ManagedProcess) -> None:
    body = padded_png(300_000)
    with ThreadPoolExecutor(1) as pool:
        with stalled_upload(server, HELD):
            waiting = pool.submit(post, server, body, "30")
            time.sleep(1.0)
            assert not waiting.done()  # no room while the stalled upload holds 900 KB
        assert waiting.result(60).status_code == 200


def test_a_chunked_body_reserves_the_cap_and_so_runs_alone(server: ManagedProcess) -> None:
    """No Content-Length: it may grow to the route's cap (10 MiB), more than the 1 MiB budget,
    so it holds all of it; even a small image waits."""
    with stalled_upload(server, None):
        refused = post(server, padded_png(10_000), "0.5")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "memory_busy"


def oip_json(image: bytes) -> bytes:
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1]}
    return json.dumps({"inputs": [{**tensor, "data": [base64.b64encode(image).decode()]}]}).encode()


def test_the_protocols_json_body_is_priced_at_the_protocol_factor(server: ManagedProcess) -> None:
    url = f"{server.base_url}/v2/models/resnet18/infer"
    headers = {"content-type": "application/json", "X-Request-Timeout": "0.5"}
    room = BUDGET - HELD  # left while the stalled upload holds its 900 KB
    fits, too_big = oip_json(padded_png(20_000)), oip_json(padded_png(45_000))
    assert PROTOCOL_HELD * len(fits) < room < PROTOCOL_HELD * len(too_big)
    assert len(too_big) < room  # refused for what parsing it holds, not its length alone
    with stalled_upload(server, HELD):
        refused = httpx.post(url, content=too_big, headers=headers, timeout=60)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "memory_busy"  # the protocol's error object
        assert httpx.post(url, content=fits, headers=headers, timeout=60).status_code == 200
    assert httpx.post(url, content=too_big, headers=headers, timeout=60).status_code == 200


def test_a_grpc_infer_is_priced_before_it_is_parsed(server: ManagedProcess) -> None:
    """gRPC reads the message itself; it is priced before it is parsed, as the REST body is."""
    target = f"127.0.0.1:{server.env['SERVING_GRPC_PORT']}"

    def infer(image: bytes) -> None:
        tensor = grpcclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
        with grpcclient.InferenceServerClient(target) as client:
            client.infer("resnet18", [tensor], client_timeout=30.0)

    room = BUDGET - HELD
    fits, too_big = padded_png(15_000), padded_png(60_000)
    assert GRPC_HELD * (len(fits) + 200) < room < GRPC_HELD * len(too_big)  # 200: the framing
    with stalled_upload(server, HELD):
        with pytest.raises(InferenceServerException) as refused:
            infer(too_big)
        assert str(refused.value.status()) == "StatusCode.UNAVAILABLE"
        assert "SERVING_MAX_BODY_BYTES_IN_FLIGHT" in str(refused.value.message())
        infer(fits)
    infer(too_big)


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """Loopback HTTP serving /big.png (300 KB, with its Content-Length)."""
    data = padded_png(300_000, seed=1)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/big.png"
    finally:
        httpd.shutdown()


def test_an_image_url_reserves_its_download(server: ManagedProcess, image_server: str) -> None:
    def by_url(timeout_s: str) -> httpx.Response:
        return httpx.post(
            f"{server.base_url}/predict",
            json={"url": image_server},
            headers={"X-Request-Timeout": timeout_s},
            timeout=60,
        )

    with stalled_upload(server, HELD):
        refused = by_url("0.5")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "memory_busy"
    assert by_url("5").status_code == 200


def test_every_reservation_is_given_back(server: ManagedProcess) -> None:
    """After the tests above (refusals, waits, uploads abandoned mid-body): nothing held, and
    each abandoned upload is a 499 `client_closed_request` in the log and the metrics, not a
    500 with a traceback (the 5xx alerts would fire on clients that hang up)."""
    assert in_flight(server) == 0
    assert metric(server, "body_memory_budget_bytes{}") == BUDGET
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    statuses = [line["status"] for line in lines if line.get("message") == "request"]
    assert 500 not in statuses
    assert not [line for line in lines if line["level"] == "error"]
    closed = [line for line in lines if line.get("status") == 499 and line["route"] == "/predict"]
    assert len(closed) == len(STALLED)
    assert {line["error_code"] for line in closed} == {"client_closed_request"}
    count = 'request_count_total{method="POST",route="/predict",status="499"}'
    assert metric(server, count) == len(STALLED)
