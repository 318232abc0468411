"""The dynamic batcher: batches follow load, results go back to the right caller, deadlines drop
work before it runs, draining finishes what was accepted. (Who may join the queue is admission's
decision: tests/serving/test_service.py.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.errors import DeadlineExceededError, InferenceError, NotReadyError
from app.serving.batcher import Array, Batcher
from app.telemetry.metrics import Metrics

pytestmark = pytest.mark.anyio


class SlowIdentity:
    """Infer function: returns each image's first value as its 'probabilities', after a delay.
    Records batch sizes; can be held at a gate to pile up a queue deterministically."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Array) -> Array:
        self.gate.wait(10)
        time.sleep(self.seconds)
        self.batches.append(batch.shape[0])
        return batch.reshape(batch.shape[0], -1)[:, :4].copy()


def item(value: float) -> Array:
    return np.full((3, 2, 2), value, dtype=np.float32)


@pytest.fixture
async def make_batcher() -> AsyncIterator[Callable[..., Batcher]]:
    executor = ThreadPoolExecutor(max_workers=1)
    made: list[Batcher] = []

    def factory(infer: Callable[[Array], Array], **kwargs: float) -> Batcher:
        options: dict[str, float] = {
            "max_batch_size": 4,
            "max_delay_s": 0.0,
        }
        options.update(kwargs)
        batcher = Batcher(
            infer,
            executor=executor,
            metrics=Metrics(),
            model_label="test",
            max_batch_size=int(options["max_batch_size"]),
            max_delay_s=options["max_delay_s"],
        )
        batcher.start()
        made.append(batcher)
        return batcher

    yield factory
    for batcher in made:
        await batcher.close(timeout_s=5)
    executor.shutdown(wait=True)


async def test_lone_request_runs_at_once_without_waiting_for_the_delay(
    make_batcher: Callable[..., Batcher],
) -> None:
    infer = SlowIdentity()
    # An hour's delay: had it applied, the guard below (a hang detector, not a speed bound)
    # would end the test long before.
    batcher = make_batcher(infer, max_delay_s=3600.0)
    async with asyncio.timeout(60):
        probs, timing = await batcher.submit(item(1.0))
    assert timing.batch_size == 1
    assert probs.tolist() == [1.0, 1.0, 1.0, 1.0]


async def test_results_go_back_to_their_own_callers(make_batcher: Callable[..., Batcher]) -> None:
    infer = SlowIdentity(0.02)
    batcher = make_batcher(infer, max_batch_size=4)
    values = [float(i) for i in range(23)]
    results = await asyncio.gather(*(batcher.submit(item(v)) for v in values))
    assert [r[0][0].item() for r in results] == values
    assert max(infer.batches) > 1  # concurrency turned into batches
    assert max(infer.batches) <= 4
    assert sum(infer.batches) == len(values)


async def test_queued_requests_form_full_batches(make_batcher: Callable[..., Batcher]) -> None:
    infer = SlowIdentity()
    infer.gate.clear()  # hold the model so the queue fills up
    batcher = make_batcher(infer, max_batch_size=4)
    first = asyncio.create_task(batcher.submit(item(0.0)))
    await asyncio.sleep(0.05)  # it found an idle model and is running (held at the gate)
    queued = [asyncio.create_task(batcher.submit(item(float(i)))) for i in range(1, 9)]
    await asyncio.sleep(0.05)
    assert batcher.depth == 8
    infer.gate.set()
    await asyncio.gather(first, *queued)
    # The first image ran alone; the 8 that queued behind it ran as 4 + 4.
    assert infer.batches == [1, 4, 4]


async def test_delay_lets_a_batch_fill_under_load(make_batcher: Callable[..., Batcher]) -> None:
    infer = SlowIdentity()
    infer.gate.clear()
    batcher = make_batcher(infer, max_batch_size=4, max_delay_s=0.3)
    lone = asyncio.create_task(batcher.submit(item(0.0)))
    await asyncio.sleep(0.05)  # running alone, held at the gate
    pair = [asyncio.create_task(batcher.submit(item(float(i)))) for i in (1, 2)]
    await asyncio.sleep(0.05)
    infer.gate.set()  # two are queued: under load, so the next batch may wait to fill

    async def late() -> None:
        await asyncio.sleep(0.1)
        await batcher.submit(item(9.0))

    await asyncio.gather(lone, *pair, late())
    assert infer.batches == [1, 3]  # the late arrival joined the waiting pair


async def test_deadline_passed_in_queue_is_dropped_before_the_model(
    make_batcher: Callable[..., Batcher],
) -> None:
    infer = SlowIdentity()
    infer.gate.clear()
    batcher = make_batcher(infer, max_batch_size=1)
    blocker = asyncio.create_task(batcher.submit(item(0.0)))
    await asyncio.sleep(0.05)
    doomed = asyncio.create_task(batcher.submit(item(5.0), deadline=time.monotonic() + 0.05))
    await asyncio.sleep(0.2)
    infer.gate.set()
    await blocker
    with pytest.raises(DeadlineExceededError):
        await doomed
    assert infer.batches == [1]  # the expired image never reached the model


async def test_model_failure_reaches_every_caller_and_the_worker_survives(
    make_batcher: Callable[..., Batcher],
) -> None:
    calls = {"n": 0}

    def flaky(batch: Array) -> Array:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return batch.reshape(batch.shape[0], -1)[:, :4]

    batcher = make_batcher(flaky)
    with pytest.raises(InferenceError):
        await batcher.submit(item(1.0))
    probs, _ = await batcher.submit(item(2.0))
    assert probs[0].item() == 2.0


async def test_cancelled_request_is_skipped(make_batcher: Callable[..., Batcher]) -> None:
    infer = SlowIdentity()
    infer.gate.clear()
    batcher = make_batcher(infer, max_batch_size=8)
    blocker = asyncio.create_task(batcher.submit(item(0.0)))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(batcher.submit(item(1.0)))
    kept = asyncio.create_task(batcher.submit(item(2.0)))
    await asyncio.sleep(0.05)
    gone.cancel()  # the client disconnected
    infer.gate.set()
    await blocker
    probs, timing = await kept
    assert probs[0].item() == 2.0
    assert timing.batch_size == 1


async def test_drain_finishes_queued_work_and_refuses_new(
    make_batcher: Callable[..., Batcher],
) -> None:
    infer = SlowIdentity(0.05)
    batcher = make_batcher(infer, max_batch_size=2)
    queued = [asyncio.create_task(batcher.submit(item(float(i)))) for i in range(6)]
    await asyncio.sleep(0.01)
    batcher.stop_accepting()
    with pytest.raises(NotReadyError):
        await batcher.submit(item(9.0))
    await batcher.close(timeout_s=5)
    results = await asyncio.gather(*queued)
    assert [r[0][0].item() for r in results] == [float(i) for i in range(6)]
