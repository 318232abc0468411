"""Rolling restarts behind a real nginx under continuous load: not one failed request.

The procedure is the benchmark's (`python -m bench.rolling`, see bench/rolling.py), run here as
its own process, as the overload test runs its benchmark. The strict run lets nginx retry
nothing and sends SIGTERM right after the replica leaves the upstream, so requests are still
running on it: each must be answered by the draining replica (a replica that dropped them fails
the run). The abrupt run sends SIGTERM while nginx still routes new requests to the replica,
with the retry policy we recommend for production.

That nginx changes its upstream by reloading; the last test pins that a reload cannot cut a
client's connection under a request (before, one abrupt run in five or so failed that way)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.rolling import STRICT, Nginx
from harness.process import group_stat
from helpers.process import run_module
from helpers.tools import tool


@pytest.mark.slow
@pytest.mark.parametrize(
    ("clients", "model", "abrupt"),
    [(6, "resnet50", False), (4, "resnet18", True)],
    ids=["strict_proxy", "abrupt_sigterm"],
)
def test_rolling_restart(
    clients: int,
    model: str,
    abrupt: bool,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    tool("nginx")
    out = tmp_path / "rolling.json"
    args = ["--replicas", "2", "--clients", str(clients), "--model", model, "--json", str(out)]
    completed = run_module("bench.rolling", *args, *(["--abrupt"] if abrupt else []))
    assert out.is_file(), completed.stderr[-3000:]
    report = json.loads(out.read_text())
    record_property("requests", report["requests"])
    record_property("failed", report["failed"])
    assert report["failed"] == 0, report["failures"]
    # Load went on through every replacement (how much is a benchmark figure: bench/results/).
    assert len(report["answered_during_replacement"]) == report["replicas"] == 2
    assert all(n > 0 for n in report["answered_during_replacement"]), report["steps"]
    assert report["replica_exit_codes"] == [0, 0]
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.fixture
def upstream() -> Iterator[int]:
    """A plain HTTP/1.1 server that answers 200 to anything: nginx's only upstream."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def do_POST(self) -> None:
            self.do_GET()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()


def test_a_reload_of_the_runs_nginx_cuts_no_connection_it_offered_for_reuse(
    upstream: int, tmp_path: Path
) -> None:
    """A reload makes nginx's old worker close its idle client keep-alive connections at once,
    so a POST sent on one just then is reset before any replica sees it: the rolling run failed
    that way with every replica answering. Its nginx must not offer a connection for reuse that
    a reload then cuts."""
    tool("nginx")
    nginx = Nginx(tmp_path, [upstream], STRICT)
    nginx.process.start()
    try:
        nginx.process.wait_ready(timeout_s=30)
        conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
        conn.request("POST", "/predict", body=b"image")
        first = conn.getresponse()
        first.read()
        assert first.status == 200
        offered = not first.will_close
        workers = set(group_stat(nginx.process.pid)) - {nginx.process.pid}
        nginx.reload([upstream])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            members = group_stat(nginx.process.pid)
            if not any(pid in members and members[pid][0] != "Z" for pid in workers):
                break  # the old workers are gone: whatever they closed is closed
            time.sleep(0.05)
        if offered:
            try:
                conn.request("POST", "/predict", body=b"image")
                second: int | str = conn.getresponse().status
            except OSError as exc:  # reset, broken pipe, or closed without an answer
                second = repr(exc)
            assert second == 200, "the reload cut a connection nginx had offered for reuse"
        conn.close()
    finally:
        nginx.process.terminate()
