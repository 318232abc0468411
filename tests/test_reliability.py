"""Overload, deadlines, draining and API keys, on real server processes over sockets.

The slow server (resnet50, fp32, one thread, one image per forward pass: ~0.1-0.3 s per image
here) makes queues form with a handful of clients, so refusals and deadlines are observable."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app import runtime
from app.main import create_app
from bench.procs import ManagedProcess, app_process
from conftest import make_settings, wait_ready
from helpers.images import PHOTOS

PHOTO = PHOTOS["grace_hopper"].read_bytes()
KEY_A = "a-very-secret-key-0001"
KEY_B = "another-secret-key-0002"


def _headers(extra: dict[str, str] | None) -> dict[str, str]:
    return {"content-type": "image/jpeg", **(extra or {})}


def raw_post(client: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/predict", content=PHOTO, headers=_headers(headers))


async def araw_post(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post("/predict", content=PHOTO, headers=_headers(headers))


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


async def burst(
    base_url: str, count: int, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        tasks = [araw_post(client, headers) for _ in range(count)]
        return list(await asyncio.gather(*tasks))


# --- admission control and deadlines -------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
def test_expected_wait_beyond_the_deadline_is_refused_up_front(
    slow_server: ManagedProcess,
) -> None:
    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=120) as client:
            load = [asyncio.create_task(araw_post(client)) for _ in range(4)]
            await asyncio.sleep(0.5)  # the queue holds several images now
            hurried = await araw_post(client, {"X-Request-Timeout": "0.05"})
            return list(await asyncio.gather(*load)), hurried

    load, hurried = asyncio.run(scenario())
    assert all(r.status_code in (200, 503) for r in load)
    # Refused up front, from the estimate: not a 504 after waiting in the queue.
    assert hurried.status_code == 503, hurried.text
    assert hurried.json()["error"]["code"] == "overloaded"
    assert "expected wait" in hurried.json()["error"]["message"]


def test_deadline_passing_in_the_queue_is_504_and_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Admitted (no wait estimate yet), then the model stalls: the queued request's deadline
    passes, and it is dropped before the model runs, answered 504."""
    gate = threading.Event()
    stalling = threading.Event()
    ran: list[int] = []
    real_infer = runtime.ModelRuntime.infer

    def stalled_infer(self: runtime.ModelRuntime, batch: torch.Tensor) -> torch.Tensor:
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
            first = pool.submit(raw_post, client)
            time.sleep(0.3)  # the first image holds the model
            hurried = pool.submit(raw_post, client, {"X-Request-Timeout": "0.3"})
            time.sleep(0.8)  # its deadline passes while it waits in the queue
            gate.set()
            assert first.result(30).status_code == 200
            late = hurried.result(30)
    assert late.status_code == 504
    assert late.json()["error"]["code"] == "deadline_exceeded"
    assert ran == [1]  # only the first image reached the model


def test_bad_request_timeout_header_is_422(client: TestClient) -> None:
    for value in ("soon", "-1", "0", "nan", "inf"):
        response = client.post(
            "/predict",
            content=PHOTO,
            headers={"content-type": "image/jpeg", "X-Request-Timeout": value},
        )
        assert response.status_code == 422, value
        assert response.json()["error"]["code"] == "invalid_parameter"


def test_request_timeout_header_is_capped_not_refused(client: TestClient) -> None:
    response = client.post(
        "/predict",
        content=PHOTO,
        headers={"content-type": "image/jpeg", "X-Request-Timeout": "100000"},
    )
    assert response.status_code == 200


# --- draining ------------------------------------------------------------------------------


def test_draining_refuses_new_work_but_ready_says_why() -> None:
    app = create_app(make_settings(), on_fatal=lambda exc: None)
    with TestClient(app) as client:
        wait_ready(client)
        app.state.service.start_draining()
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "draining"
        response = raw_post(client)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "not_ready"
        assert client.get("/health").status_code == 200


@pytest.mark.slow
def test_sigterm_answers_everything_in_flight_then_exits_zero(tmp_path: Path) -> None:
    env = {
        "SERVING_MODEL_NAME": "resnet50",
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_PRECISION": "fp32",
        "SERVING_NUM_THREADS": "1",
        "SERVING_MAX_BATCH_SIZE": "2",
        "SERVING_GRACEFUL_TIMEOUT_S": "20",
    }
    with app_process(env, log_path=tmp_path / "log") as server:
        server.wait_ready()
        assert server.proc is not None
        proc = server.proc

        async def scenario() -> tuple[list[httpx.Response], list[str]]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                inflight = [asyncio.create_task(araw_post(client)) for _ in range(8)]
                await asyncio.sleep(0.4)  # all accepted: running or queued
                proc.send_signal(signal.SIGTERM)
                late: list[str] = []
                await asyncio.sleep(0.2)
                async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as fresh:
                    try:
                        response = await fresh.get("/ready")
                        late.append(str(response.status_code))
                    except httpx.TransportError as exc:  # the listener is closed: also fine
                        late.append(type(exc).__name__)
                results = list(await asyncio.gather(*inflight))
                return results, late

        results, late = asyncio.run(scenario())
        code = proc.wait(60)  # a hang detector; draining ends by SERVING_GRACEFUL_TIMEOUT_S
    # Past the graceful timeout requests would have been cut: every one answered proves the
    # drain finished in time.
    assert [r.status_code for r in results] == [200] * 8
    assert late[0] != "200"  # never "ready" once draining
    assert code == 0


# --- API keys ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    env = {
        "SERVING_MODEL_NAME": "resnet18",
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_API_KEYS": f"{KEY_A},{KEY_B}",
        "SERVING_LOG_LEVEL": "debug",
    }
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    with app_process(env, log_path=log) as proc:
        proc.wait_ready()
        yield proc


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-wrong-key"},
        {"X-API-Key": "wrong-key-wrong-key"},
        {"Authorization": f"Basic {KEY_A}"},
        {"X-API-Key": KEY_A[:-1]},
    ],
    ids=["missing", "wrong-bearer", "wrong-header", "basic-scheme", "prefix"],
)
def test_predict_without_a_valid_key_is_401(
    keyed_server: ManagedProcess, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        response = raw_post(client, headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/model").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY_A}"}, {"X-API-Key": KEY_B}],
    ids=["bearer", "x-api-key"],
)
def test_predict_with_a_valid_key(keyed_server: ManagedProcess, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        assert raw_post(client, headers).status_code == 200
        assert client.get("/model", headers=headers).status_code == 200


def test_probes_and_metrics_need_no_key(keyed_server: ManagedProcess) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        for path in ("/health", "/ready", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_keys_never_reach_the_logs(keyed_server: ManagedProcess) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        raw_post(client, {"Authorization": f"Bearer {KEY_A}"})
        raw_post(client, {"X-API-Key": "wrong-key-wrong-key"})
    time.sleep(0.2)
    log = keyed_server.log_text()
    assert "request" in log  # the access log is there (debug level)
    for secret in (KEY_A, KEY_B, "wrong-key-wrong-key"):
        assert secret not in log


def test_openapi_documents_both_key_schemes(keyed_server: ManagedProcess) -> None:
    spec = httpx.get(f"{keyed_server.base_url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
    assert spec["paths"]["/predict"]["post"]["security"]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_metrics_on_a_separate_port(tmp_path: Path) -> None:
    from bench.procs import free_port

    port = free_port()
    env = {"SERVING_MODEL_NAME": "resnet18", "SERVING_MODEL_WEIGHTS": "random",
           "SERVING_METRICS_PORT": str(port)}  # fmt: skip
    with app_process(env, log_path=tmp_path / "log") as server:
        server.wait_ready()
        assert httpx.get(f"{server.base_url}/metrics").status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert "request_count_total" in scraped.text
        assert server.terminate() == 0


def test_settings_repr_hides_keys() -> None:
    settings = make_settings(api_keys=f"{KEY_A},{KEY_B}")
    assert KEY_A not in repr(settings)
    assert KEY_A not in json.dumps(settings.model_dump(mode="json"))
