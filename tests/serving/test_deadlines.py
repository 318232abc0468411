"""Per-request deadlines (X-Request-Timeout): a deadline that passes while the request waits in
the queue is answered 504 and the image never reaches the model; a malformed header is 422, an
oversized one is capped, not refused. (Refusal up front from the expected wait: test_admission.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.model import runtime
from app.serving.batcher import Array
from conftest import make_settings, wait_ready
from helpers.predict import post_photo


def test_deadline_passing_in_the_queue_is_504_and_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Admitted (no wait estimate yet), then the model stalls: the queued request's deadline
    passes, and it is dropped before the model runs, answered 504."""
    gate = threading.Event()
    stalling = threading.Event()
    ran: list[int] = []
    real_infer = runtime.ModelRuntime.infer

    def stalled_infer(self: runtime.ModelRuntime, batch: Array) -> Array:
        if stalling.is_set():  # not during warm-up
            gate.wait(30)
            ran.append(batch.shape[0])
        return real_infer(self, batch)

    monkeypatch.setattr(runtime.ModelRuntime, "infer", stalled_infer)
    settings = make_settings(max_batch_size=1)
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as client:
        wait_ready(client)
        stalling.set()
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post_photo, client)
            time.sleep(0.3)  # the first image holds the model
            hurried = pool.submit(post_photo, client, {"X-Request-Timeout": "0.3"})
            time.sleep(0.8)  # its deadline passes while it waits in the queue
            gate.set()
            assert first.result(30).status_code == 200
            late = hurried.result(30)
    assert late.status_code == 504
    assert late.json()["error"]["code"] == "deadline_exceeded"
    assert ran == [1]  # only the first image reached the model


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan", "inf"])
def test_bad_request_timeout_header_is_422(client: TestClient, value: str) -> None:
    response = post_photo(client, {"X-Request-Timeout": value})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameter"


def test_request_timeout_header_is_capped_not_refused(client: TestClient) -> None:
    assert post_photo(client, {"X-Request-Timeout": "100000"}).status_code == 200
