"""The helper scripts the workflow runs (.github/scripts), exercised here on real inputs: the
golden-prediction check, the zero-downtime load generator against real HTTP servers, the photo
extraction, and the monitoring check against a stand-in kubectl."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / ".github" / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ci_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_prediction = load_script("check_prediction")
loadgen = load_script("loadgen")
sample_photo = load_script("sample_photo")
check_monitoring = load_script("check_monitoring")

GOOD = {
    "model": "resnet50",
    "weights": "ResNet50_Weights.IMAGENET1K_V2",
    "predictions": [
        {"label": label, "class_id": i, "score": 0.1}
        for i, label in enumerate(["military uniform", "suit", "Windsor tie", "bow tie", "cloak"])
    ],
}


# --- check_prediction ------------------------------------------------------------------------


def test_check_prediction_accepts_the_expected_class_in_the_top_k(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(GOOD))
    assert check_prediction.main([str(path), "--expect", "military uniform", "--top", "5"]) == 0
    assert check_prediction.main([str(path), "--count", "5"]) == 0


@pytest.mark.parametrize(
    ("response", "args"),
    [
        (GOOD, ["--expect", "tabby"]),  # wrong class
        (GOOD, ["--expect", "cloak", "--top", "3"]),  # right class, too far down
        (GOOD, ["--count", "3"]),  # top_k not applied
        ({**GOOD, "weights": "random"}, []),  # random weights are no proof
        ({"error": {"code": "not_ready"}}, []),  # no predictions at all
    ],
)
def test_check_prediction_rejects(
    tmp_path: Path, response: dict[str, Any], args: list[str]
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(response))
    assert check_prediction.main([str(path), *args]) == 1


def test_check_prediction_rejects_non_json(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("<html>502 Bad Gateway</html>")
    assert check_prediction.main([str(path)]) == 1


# --- loadgen ---------------------------------------------------------------------------------


class PredictHandler(BaseHTTPRequestHandler):
    """A stand-in /predict: 200 with predictions, except every `fail_every`-th request (503)."""

    fail_every: ClassVar[int] = 0
    count: ClassVar[int] = 0
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with self.lock:
            type(self).count += 1
            number = type(self).count
        if not body or not self.headers.get("Content-Type", "").startswith("image/"):
            self.send_response(415)
            self.end_headers()
            return
        if self.fail_every and number % self.fail_every == 0:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b'{"error": {"code": "overloaded"}}')
            return
        payload = json.dumps(GOOD).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def predict_server() -> Iterator[tuple[str, type[PredictHandler]]]:
    handler = type("Handler", (PredictHandler,), {"fail_every": 0, "count": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predict", handler
    finally:
        server.shutdown()
        server.server_close()


def run_loadgen(url: str, stop_file: Path, seconds: float, *extra: str) -> int:
    timer = threading.Timer(seconds, stop_file.touch)
    timer.start()
    try:
        code: int = loadgen.main(
            [
                "--url",
                url,
                "--stop-file",
                str(stop_file),
                "--min-requests",
                "5",
                "--report-every",
                "0.5",
                "--startup-seconds",
                "5",
                *extra,
            ]
        )
    finally:
        timer.cancel()
    return code


def test_loadgen_passes_when_every_request_succeeds(
    predict_server: tuple[str, type[PredictHandler]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, handler = predict_server
    assert run_loadgen(url, tmp_path / "stop", 1.0) == 0
    out = capsys.readouterr().out
    assert "loadgen: running" in out
    summary = json.loads(out.split("loadgen: summary ", 1)[1].splitlines()[0])
    assert summary["failed"] == 0
    assert summary["ok"] >= 5
    assert summary["passed"] is True
    assert handler.count == summary["requests"]


def test_loadgen_fails_on_a_single_bad_response(
    predict_server: tuple[str, type[PredictHandler]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, handler = predict_server
    handler.fail_every = 10
    assert run_loadgen(url, tmp_path / "stop", 1.0) == 1
    out = capsys.readouterr().out
    assert "loadgen: FAIL HTTP 503" in out
    assert "failed requests" in out


def test_loadgen_fails_when_the_server_goes_away(tmp_path: Path) -> None:
    handler = type("Handler", (PredictHandler,), {"fail_every": 0, "count": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}/predict"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def kill() -> None:
        time.sleep(0.5)
        server.shutdown()
        server.server_close()

    threading.Thread(target=kill, daemon=True).start()
    assert run_loadgen(url, tmp_path / "stop", 1.0) == 1


def test_loadgen_fails_when_the_stop_file_never_comes(
    predict_server: tuple[str, type[PredictHandler]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = predict_server
    assert run_loadgen(url, tmp_path / "stop", 30.0, "--max-seconds", "1") == 1
    assert "--max-seconds 1 reached before the stop file" in capsys.readouterr().out


def test_loadgen_sends_a_real_jpeg_by_default() -> None:
    jpeg = loadgen.synthetic_jpeg()
    assert jpeg.startswith(b"\xff\xd8")
    assert len(jpeg) > 1000


# --- sample_photo ----------------------------------------------------------------------------


def test_sample_photo_writes_grace_hopper(tmp_path: Path) -> None:
    out = tmp_path / "photo.jpg"
    assert sample_photo.main([str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\xff\xd8")
    from PIL import Image

    with Image.open(out) as image:
        assert image.format == "JPEG"
        assert min(image.size) >= 200


def test_sample_photo_reads_the_pin_from_constraints(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("numpy==2.4.6\nmatplotlib==9.9.9\n")
    assert sample_photo.pinned_matplotlib(constraints) == "9.9.9"
    # An installed matplotlib of another version is not used: the wheel would be downloaded.
    assert sample_photo.from_installed("9.9.9") is None
    constraints.write_text("numpy==2.4.6\n")
    with pytest.raises(SystemExit):
        sample_photo.pinned_matplotlib(constraints)


# --- check_monitoring ------------------------------------------------------------------------


FAKE_KUBECTL = """#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
state = json.load(open(os.environ["FAKE_STATE"]))
if args[:2] == ["get", "services"]:
    print(json.dumps({"items": [{"metadata": {"name": "rel-kube-promet-prometheus"}}]}))
elif args[:2] == ["get", "prometheusrules"]:
    print(json.dumps({"items": [{"metadata": {"labels": {"app.kubernetes.io/instance": "rel"}},
                                 "spec": {"groups": [{"name": "a"}, {"name": "b"}]}}]}))
elif args[:2] == ["get", "--raw"]:
    path = args[2]
    base = "/api/v1/namespaces/ns/services/rel-kube-promet-prometheus:http-web/proxy/api/v1/"
    assert path.startswith(base), path
    if "/query?" in path:
        assert "up%7Bjob%3D%22rel%22%2C%20namespace%3D%22ns%22%7D" in path, path
        data = {"result": [{"metric": {"pod": "p1"}, "value": [0, state["up"]]}]}
    else:
        data = {"groups": [{"name": g} for g in state["groups"]]}
    print(json.dumps({"status": "success", "data": data}))
else:
    sys.exit("unexpected: " + " ".join(args))
"""


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    state = tmp_path / "state.json"
    monkeypatch.setenv("FAKE_STATE", str(state))
    return state


def test_check_monitoring_passes_when_scraped_and_rules_loaded(fake_kubectl: Path) -> None:
    fake_kubectl.write_text(json.dumps({"up": "1", "groups": ["a", "b", "other"]}))
    assert check_monitoring.main(["--namespace", "ns", "--release", "rel", "--timeout", "1"]) == 0


@pytest.mark.parametrize("state", [{"up": "0", "groups": ["a", "b"]}, {"up": "1", "groups": ["a"]}])
def test_check_monitoring_fails_when_down_or_a_group_is_missing(
    fake_kubectl: Path, state: dict[str, Any]
) -> None:
    fake_kubectl.write_text(json.dumps(state))
    # --timeout 0: one look, then the verdict.
    assert check_monitoring.main(["--namespace", "ns", "--release", "rel", "--timeout", "0"]) == 1
