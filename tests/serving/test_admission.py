"""Admission control on a real server process over sockets: a full queue and an expected wait
beyond the client's deadline are refused up front with 503 `overloaded`.

The slow server (resnet50, fp32, one thread, one image per forward pass: ~0.1-0.3 s per image
here) makes a queue form with a handful of clients, so refusals are observable."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from helpers.predict import apost_photo
from helpers.process import ManagedProcess, app_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    env = {
        "SERVING_MODEL_NAME": "resnet50",
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_PRECISION": "fp32",
        "SERVING_NUM_THREADS": "1",
        "SERVING_DECODE_WORKERS": "1",
        "SERVING_MAX_BATCH_SIZE": "1",
        "SERVING_MAX_QUEUE_SIZE": "4",
        "SERVING_LOG_LEVEL": "warning",
    }
    log = tmp_path_factory.mktemp("slow") / "server.log"
    with app_process(env, log_path=log) as proc:
        proc.wait_ready()
        yield proc


async def burst(base_url: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        return list(await asyncio.gather(*(apost_photo(client) for _ in range(count))))


def test_full_queue_is_refused_fast_with_retry_after(slow_server: ManagedProcess) -> None:
    responses = asyncio.run(burst(slow_server.base_url, 24))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= 4  # a full queue (SERVING_MAX_QUEUE_SIZE=4), at least
    assert statuses[503] >= 1
    for response in responses:
        if response.status_code == 503:
            body = response.json()
            assert body["error"]["code"] == "overloaded"
            assert int(response.headers["retry-after"]) >= 1
    # How fast refusals come is a benchmark figure (bench/overload.py, "p95 refusal").


def test_expected_wait_beyond_the_deadline_is_refused_up_front(
    slow_server: ManagedProcess,
) -> None:
    # Three clients in a loop keep images queued however fast this CPU runs the model (a fixed
    # burst drained before the hurried request on a fast one), and never fill the queue of 4, so
    # the refusal can only come from the estimate. 10 ms is less than one image takes on any CPU.
    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        answered: list[httpx.Response] = []
        first = asyncio.Event()
        done = asyncio.Event()

        async def keep_busy(client: httpx.AsyncClient) -> None:
            while not done.is_set():
                answered.append(await apost_photo(client))
                first.set()

        async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=120) as client:
            load = [asyncio.create_task(keep_busy(client)) for _ in range(3)]
            await first.wait()  # the model has run: the server has a batch time to go by
            hurried = await apost_photo(client, {"X-Request-Timeout": "0.01"})
            done.set()
            await asyncio.gather(*load)
            return answered, hurried

    load, hurried = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in load), Counter(r.status_code for r in load)
    # Refused up front, from the estimate: not a 504 after waiting in the queue.
    assert hurried.status_code == 503, hurried.text
    assert hurried.json()["error"]["code"] == "overloaded"
    assert "expected wait" in hurried.json()["error"]["message"]
