"""A real `python -m app` (uvicorn) process over a real socket: start-up, readiness,
concurrency, failures at start-up, logs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.model import runtime
from conftest import make_settings
from helpers.images import PHOTOS
from helpers.process import ManagedProcess, app_process, free_port, json_log, run_app

# --- start-up failures ---------------------------------------------------------------------


def test_missing_weights_file_exits_nonzero_with_one_clear_line(tmp_path: Path) -> None:
    result = run_app({"SERVING_MODEL_WEIGHTS": str(tmp_path / "missing.pth")})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "missing.pth" in lines[0]
    assert "SERVING_MODEL_WEIGHTS" in lines[0]


def test_no_cached_weights_and_no_download_exits_nonzero(tmp_path: Path) -> None:
    result = run_app(
        {
            "TORCH_HOME": str(tmp_path),
            "SERVING_MODEL_WEIGHTS": "DEFAULT",
            "SERVING_ALLOW_WEIGHTS_DOWNLOAD": "false",
        }
    )
    assert result.returncode == 2
    assert "not in torch's cache" in result.stderr
    assert str(tmp_path) in result.stderr


def test_bad_setting_exits_nonzero_naming_the_variable() -> None:
    result = run_app({"SERVING_TOP_K": "0", "SERVING_MODEL_WEIGHTS": "random"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "SERVING_TOP_K" in lines[0]


def test_weights_that_fail_to_load_stop_the_process(tmp_path: Path) -> None:
    """Resolution passes (the file exists) but loading fails: the server must exit, not idle
    unready forever."""
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"definitely not a state dict")
    with app_process(
        {"SERVING_MODEL_NAME": "resnet18", "SERVING_MODEL_WEIGHTS": str(bad)},
        log_path=tmp_path / "log.txt",
    ) as server:
        assert server.proc is not None
        code = server.proc.wait(60)
    assert code == 1
    assert "could not be read" in server.log_text()


# --- readiness -----------------------------------------------------------------------------


def test_ready_is_503_until_warm_up_has_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real_warm_up = runtime.ModelRuntime.warm_up

    def held_warm_up(self: runtime.ModelRuntime, *args: Any, **kwargs: Any) -> float:
        gate.wait(30)
        return real_warm_up(self, *args, **kwargs)

    monkeypatch.setattr(runtime.ModelRuntime, "warm_up", held_warm_up)
    with TestClient(create_app(make_settings(), on_fatal=lambda exc: None)) as client:
        seen = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = client.get("/ready")
            assert response.status_code == 503
            body = response.json()
            assert body["ready"] is False
            assert response.headers["retry-after"]
            seen.add(body["status"])
            if body["status"] == "warming":
                break
            time.sleep(0.02)
        assert "warming" in seen
        assert client.get("/health").status_code == 200  # alive while not ready
        predict = client.post("/predict", files={"file": ("a.jpg", b"x")})
        assert predict.status_code == 503
        assert predict.json()["error"]["code"] == "not_ready"
        gate.set()
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)


@pytest.mark.slow
def test_resnet50_process_goes_from_503_to_ready(tmp_path: Path) -> None:
    statuses: list[int] = []
    with (
        app_process(
            {"SERVING_MODEL_NAME": "resnet50", "SERVING_MODEL_WEIGHTS": "random"},
            log_path=tmp_path / "log.txt",
        ) as server,
        httpx.Client(base_url=server.base_url, timeout=5) as client,
    ):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = client.get("/ready")
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            time.sleep(0.02)
        assert statuses[-1] == 200
        assert 503 in statuses, "readiness was never observed as 503 while loading"
        photo = PHOTOS["grace_hopper"].read_bytes()
        response = client.post("/predict", files={"file": ("g.jpg", photo, "image/jpeg")})
        assert response.status_code == 200
        assert response.json()["model"] == "resnet50"
        assert server.terminate() == 0


# --- concurrency over a real socket --------------------------------------------------------


def test_twenty_concurrent_requests_all_correct(server: ManagedProcess) -> None:
    names = sorted(PHOTOS)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        expected = {}
        for name in names:
            response = client.post("/predict", files={"file": (name, PHOTOS[name].read_bytes())})
            assert response.status_code == 200
            expected[name] = response.json()["predictions"]

    async def burst() -> list[tuple[str, httpx.Response]]:
        # no-store: the photos were just classified, and the burst is about the model's batches.
        no_store = {"Cache-Control": "no-store"}
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=120, headers=no_store
        ) as client:

            async def one(i: int) -> tuple[str, httpx.Response]:
                name = names[i % len(names)]
                files = {"file": (name, PHOTOS[name].read_bytes())}
                return name, await client.post("/predict", files=files)

            return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(burst())
    batch_sizes = []
    for name, response in results:
        assert response.status_code == 200, response.text
        body = response.json()
        got = body["predictions"]
        assert [p["class_id"] for p in got] == [p["class_id"] for p in expected[name]]
        for a, b in zip(got, expected[name], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        batch_sizes.append(body["timing_ms"]["batch_size"])
    assert max(batch_sizes) > 1, "concurrent requests should have been batched"


def test_health_answers_while_the_model_is_busy(server: ManagedProcess) -> None:
    """Model work runs off the event loop: a probe is answered in the middle of a burst, while
    predictions are still waiting for the model (a blocked loop would answer it only after the
    burst). How fast it answers is a benchmark figure, not asserted."""

    async def scenario() -> int:
        # no-store: 32 copies of one photo would otherwise be classified once (single-flight).
        no_store = {"Cache-Control": "no-store"}
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=120, headers=no_store
        ) as client:
            photo = PHOTOS["coffee"].read_bytes()
            load = [
                asyncio.create_task(client.post("/predict", files={"file": ("c.png", photo)}))
                for _ in range(32)
            ]
            # The first answer: the model is working through the others now.
            await asyncio.wait(load, return_when=asyncio.FIRST_COMPLETED)
            response = await client.get("/health")
            assert response.status_code == 200
            still_waiting = sum(not task.done() for task in load)
            assert all(r.status_code == 200 for r in await asyncio.gather(*load))
            return still_waiting

    assert asyncio.run(scenario()) > 0


def thread_nice_and_cpu(pid: int) -> list[tuple[int, int]]:
    """(nice, CPU ticks used) of every thread of a process (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out.append((int(fields[16]), int(fields[11]) + int(fields[12])))
    return out


def test_the_engines_threads_run_at_the_model_threads_lower_priority(
    server: ManagedProcess,
) -> None:
    """SERVING_MODEL_THREAD_NICENESS (10 by default) reaches the engine's own threads, not just
    the model thread: OpenVINO starts its workers from the (niced) model thread, which they
    inherit. With 2 inference threads, at least 2 niced threads do the work."""
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        assert client.get("/model").json()["backend"] == "openvino"
        for _ in range(8):
            response = client.post(
                "/predict", files={"file": ("c.png", PHOTOS["coffee"].read_bytes())}
            )
            assert response.status_code == 200
    niced_workers = [cpu for nice, cpu in thread_nice_and_cpu(server.pid) if nice >= 10 and cpu]
    assert len(niced_workers) >= 2, thread_nice_and_cpu(server.pid)


def test_access_log_is_one_json_line_per_request(server: ManagedProcess) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        client.post(
            "/predict",
            files={"file": ("g.jpg", PHOTOS["grace_hopper"].read_bytes())},
            headers={"X-Request-ID": "log-check-42"},
        )
    time.sleep(0.2)
    records = json_log(server.log_text())
    mine = [r for r in records if r.get("request_id") == "log-check-42"]
    assert len(mine) == 1
    entry = mine[0]
    assert entry["route"] == "/predict"
    assert entry["status"] == 200
    assert entry["duration_ms"] > 0
    assert entry["request_bytes"] > 0
    assert "\\xff\\xd8" not in json.dumps(records)  # no image bytes in logs


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    with app_process(
        {"SERVING_MODEL_NAME": "resnet18", "SERVING_MODEL_WEIGHTS": "random"},
        log_path=tmp_path / "log.txt",
    ) as server:
        server.wait_ready()
        assert server.terminate(timeout_s=30) == 0


def test_metrics_on_a_separate_port(tmp_path: Path) -> None:
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


def test_python_warnings_become_json_log_lines(tmp_path: Path) -> None:
    """A decompression-bomb header makes Pillow warn; the log stream must stay JSON."""
    from helpers.hostile import png_zero_bomb

    env = {"SERVING_MODEL_NAME": "resnet18", "SERVING_MODEL_WEIGHTS": "random",
           "SERVING_LOG_FORMAT": "json"}  # fmt: skip
    with app_process(env, log_path=tmp_path / "log") as server:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            bomb = png_zero_bomb(12_000, 12_000)  # over Pillow's warning threshold
            assert (
                client.post(
                    "/predict", content=bomb, headers={"content-type": "image/png"}
                ).status_code
                == 413
            )
        server.terminate()
    records = json_log(server.log_text())  # every line parses
    assert any(r.get("logger") == "py.warnings" for r in records)


def test_chunked_upload_over_the_limit_is_cut_off_while_streaming(tmp_path: Path) -> None:
    """No Content-Length to check up front: the cap must hold while the body streams in."""
    env = {"SERVING_MODEL_NAME": "resnet18", "SERVING_MODEL_WEIGHTS": "random",
           "SERVING_MAX_UPLOAD_BYTES": str(256 * 1024)}  # fmt: skip

    def body() -> Iterator[bytes]:
        for _ in range(400):  # 25 MB, far over the limit
            yield b"\xff" * (64 * 1024)

    with app_process(env, log_path=tmp_path / "log") as server:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            try:
                response = client.post(
                    "/predict", content=body(), headers={"content-type": "image/jpeg"}
                )
            except httpx.TransportError:
                pytest.fail("the server dropped the connection instead of answering 413")
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "payload_too_large"
            assert client.get("/ready").status_code == 200


def test_cuda_requested_without_a_gpu_stops_with_a_clear_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {"SERVING_MODEL_NAME": "resnet18", "SERVING_MODEL_WEIGHTS": "random",
           "SERVING_DEVICE": "cuda"}  # fmt: skip
    with app_process(env, log_path=tmp_path / "log") as server:
        assert server.proc is not None
        code = server.proc.wait(60)
    assert code == 1
    assert "SERVING_DEVICE=cuda but torch sees no CUDA device" in server.log_text()
