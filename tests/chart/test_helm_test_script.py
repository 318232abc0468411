"""The `helm test` pod's check (charts/resnet-serving/files/helm_test.py), run for real here.

In the cluster the pod runs it with the image's Python against the Service. Here it runs
against a real `python -m app` (resnet18, random weights) and against stand-in servers that
answer wrongly, to show it fails when it should.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import pytest

from chart.chartkit import CHART, Render, only

SCRIPT = CHART / "files" / "helm_test.py"


class AppServer(Protocol):
    """What this module needs of the top-level conftest's `server` fixture (a real app)."""

    @property
    def base_url(self) -> str: ...


def run_check(target: str, timeout_s: int = 60) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TARGET_URL": target,
        "READY_TIMEOUT_S": str(timeout_s),
        "TOP_K": "3",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # As the pod runs it: the source as `python3 -c` (the pod has no file to run).
    return subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT.read_text()],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s + 90,
    )


@pytest.mark.slow
def test_check_passes_against_the_real_app(server: AppServer) -> None:
    proc = run_check(server.base_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GET /ready: 200" in proc.stdout
    assert "POST /predict: 200" in proc.stdout
    assert "helm test passed" in proc.stdout


class _Handler(BaseHTTPRequestHandler):
    ready_status = 200
    predictions = 3

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(self.ready_status, {"ready": self.ready_status == 200})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        assert body.startswith(b"\x89PNG"), "the check sends a PNG"
        scores = [0.5, 0.3, 0.1, 0.05][: self.predictions]
        preds = [{"label": f"class {i}", "class_id": i, "score": s} for i, s in enumerate(scores)]
        self._send(200, {"model": "stand-in", "predictions": preds})


def _serve(ready_status: int, predictions: int) -> Iterator[str]:
    handler = type(
        "Handler", (_Handler,), {"ready_status": ready_status, "predictions": predictions}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def never_ready() -> Iterator[str]:
    yield from _serve(503, 3)


@pytest.fixture
def wrong_answer() -> Iterator[str]:
    yield from _serve(200, 2)


@pytest.fixture
def right_answer() -> Iterator[str]:
    yield from _serve(200, 3)


def test_check_passes_against_a_well_behaved_stand_in(right_answer: str) -> None:
    proc = run_check(right_answer, timeout_s=5)
    assert proc.returncode == 0, proc.stderr


def test_check_fails_when_ready_never_answers_200(never_ready: str) -> None:
    proc = run_check(never_ready, timeout_s=1)
    assert proc.returncode == 1
    assert "/ready did not answer 200" in proc.stderr
    assert "HTTP 503" in proc.stderr


def test_check_fails_on_a_wrong_predict_answer(wrong_answer: str) -> None:
    proc = run_check(wrong_answer, timeout_s=5)
    assert proc.returncode == 1
    assert "expected 3 predictions" in proc.stderr


def test_the_pod_runs_exactly_this_script(render: Render) -> None:
    pod = only(render(), "Pod")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python3", "-c"]
    assert container["args"] == [SCRIPT.read_text()]
