"""The serving core without HTTP: admission (one door, one count of what is held against
capacity) and the request pipeline on a real model (fetch -> decode -> batch -> top-k)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.errors import InvalidImageError, NotReadyError, OverloadedError
from app.model.runtime import softmax
from app.serving.admission import Admission
from app.serving.batcher import Array, Batcher
from app.serving.service import Service
from app.telemetry.metrics import Metrics
from conftest import make_settings
from helpers.images import photo_bytes

pytestmark = pytest.mark.anyio


class Readiness:
    """Stands in for the model host's readiness; the rest is real."""

    def __init__(self) -> None:
        self.ready = True

    def require_ready(self) -> None:
        if not self.ready:
            raise NotReadyError("the model is not ready (loading)", headers={"Retry-After": "5"})


class GatedModel:
    """Infer function held at a gate, taking `seconds` per batch once open."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Array) -> Array:
        self.gate.wait(10)
        time.sleep(self.seconds)
        return softmax(batch.reshape(batch.shape[0], -1)[:, :4])


@pytest.fixture
async def queue() -> AsyncIterator[tuple[Batcher, GatedModel]]:
    model = GatedModel()
    executor = ThreadPoolExecutor(max_workers=1)
    batcher = Batcher(
        model,
        executor=executor,
        max_batch_size=1,
        max_delay_s=0.0,
        metrics=Metrics(),
        model_label="test",
    )
    batcher.start()
    yield batcher, model
    model.gate.set()
    await batcher.close(timeout_s=5)
    executor.shutdown(wait=True)


def door(batcher: Batcher | None, *, size: int, readiness: Readiness | None = None) -> Admission:
    admission = Admission(readiness or Readiness(), max_queue_size=size, metrics=Metrics())
    if batcher is not None:
        admission.attach(batcher)
    return admission


def later(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


async def test_images_held_before_the_queue_count_against_its_size() -> None:
    admission = door(None, size=3)
    tickets = [admission.admit(later()) for _ in range(3)]  # reading bodies, decoding ...
    with pytest.raises(OverloadedError) as refused:
        admission.admit(later())
    assert int(refused.value.headers["Retry-After"]) >= 1
    tickets[0].release()
    admission.admit(later())  # room again


async def test_an_image_handed_to_the_queue_is_counted_once(
    queue: tuple[Batcher, GatedModel],
) -> None:
    batcher, model = queue
    model.gate.clear()
    admission = door(batcher, size=3)
    running = admission.admit(later())
    running.hand_off()
    first = asyncio.create_task(batcher.submit(np.zeros((3, 2, 2), dtype=np.float32)))
    await asyncio.sleep(0.05)  # at the model, held at the gate: neither held nor queued
    queued = []
    for _ in range(3):
        ticket = admission.admit(later())
        ticket.hand_off()
        queued.append(asyncio.create_task(batcher.submit(np.zeros((3, 2, 2), dtype=np.float32))))
    await asyncio.sleep(0.05)
    assert (admission.held, batcher.depth) == (0, 3)
    with pytest.raises(OverloadedError, match="3 images are already waiting"):
        admission.admit(later())
    model.gate.set()
    await asyncio.gather(first, *queued)
    admission.admit(later())


async def test_a_batch_extends_its_ticket_or_keeps_what_it_had() -> None:
    admission = door(None, size=4)
    ticket = admission.admit(later())
    ticket.extend(2)
    assert (ticket.held, admission.held) == (3, 3)
    with pytest.raises(OverloadedError):
        ticket.extend(2)
    assert (ticket.held, admission.held) == (3, 3)
    ticket.release()
    ticket.release()  # the route's cleanup may run after a failure already released it
    assert admission.held == 0


async def test_an_expected_wait_past_the_deadline_is_refused_at_the_door(
    queue: tuple[Batcher, GatedModel],
) -> None:
    batcher, model = queue
    model.seconds = 0.2
    admission = door(batcher, size=100)
    await batcher.submit(
        np.zeros((3, 2, 2), dtype=np.float32)
    )  # the queue learns the batch time (~0.2 s)
    waiting = [
        asyncio.create_task(batcher.submit(np.zeros((3, 2, 2), dtype=np.float32))) for _ in range(5)
    ]
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError, match="expected wait"):
        admission.admit(time.monotonic() + 0.3)
    admission.admit(later())  # a patient request is taken
    await asyncio.gather(*waiting)


async def test_nothing_is_admitted_until_the_model_is_ready() -> None:
    readiness = Readiness()
    readiness.ready = False
    admission = door(None, size=10, readiness=readiness)
    with pytest.raises(NotReadyError) as refused:
        admission.admit(later())
    assert refused.value.headers["Retry-After"] == "5"
    assert admission.held == 0


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    """The whole core on resnet18 with random weights, no HTTP."""
    core = Service(make_settings(max_queue_size=8), Metrics())
    await core.start()
    yield core
    await core.close(timeout_s=5)


async def test_the_pipeline_classifies_and_gives_the_capacity_back(service: Service) -> None:
    ticket = service.admission.admit(later())
    prediction = await service.pipeline.classify_bytes(photo_bytes("grace_hopper"), ticket, top_k=5)
    ticket.release()
    scores = [p.score for p in prediction.predictions]
    assert len(scores) == 5
    assert scores == sorted(scores, reverse=True)
    assert prediction.image_format == "JPEG"
    assert prediction.batch_size == 1
    assert service.admission.held == 0
    assert service.host.card().num_classes == 1000


async def test_a_failed_image_gives_its_place_back(service: Service) -> None:
    ticket = service.admission.admit(later())
    with pytest.raises(InvalidImageError):
        await service.pipeline.classify_bytes(b"not an image at all", ticket, top_k=5)
    assert service.admission.held == 1  # still held until the request ends
    ticket.release()
    assert service.admission.held == 0


async def test_draining_refuses_new_work_at_the_door_and_at_the_queue(
    service: Service,
) -> None:
    ticket = service.admission.admit(later())
    service.drain()
    assert not service.host.status().ready
    with pytest.raises(NotReadyError):
        service.admission.admit(later())
    with pytest.raises(NotReadyError):  # the queue is closed as well
        await service.pipeline.classify_bytes(photo_bytes("grace_hopper"), ticket, top_k=1)
    ticket.release()
