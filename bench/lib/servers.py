"""A server to measure: what it is (our app with some settings, the plain baseline, or
TorchServe), started and timed to ready, and the CPU time it uses.

Every server runs in its own process group on free loopback ports (harness/process.py), so
several run side by side and none outlives the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.torchserve import server as torchserve
from harness.process import ROOT, ManagedProcess, app_process, free_port, group_stat


@dataclass(frozen=True)
class ServerConfig:
    name: str
    kind: str  # "baseline", "serving" or "torchserve"
    env: dict[str, str] = field(default_factory=dict)  # for the baseline: {"device": ...}
    backend: str | None = None  # the in-process ceiling this configuration is judged against
    torchserve: torchserve.TorchServeSettings | None = None

    @property
    def predict_path(self) -> str:
        if self.kind == "torchserve":
            return torchserve.TorchServeProcess.predict_path
        return "/predict"


Server = ManagedProcess | torchserve.TorchServeProcess


def serving_env(model: str, **settings: str) -> dict[str, str]:
    """Our server's settings in a benchmark: `model` with random weights (the same computation
    as the real ones), warnings only in its log, and the prediction cache off: the benchmarks
    send one image over and over, which the cache would answer without the model they measure
    (bench/cache.py measures the cache itself). `settings` add to these or replace them."""
    return {"SERVING_MODEL_NAME": model, "SERVING_MODEL_WEIGHTS": "random",
            "SERVING_LOG_LEVEL": "warning", "SERVING_CACHE_BYTES": "0", **settings}  # fmt: skip


def build_ir(model: str, out: Path, *, checkout: Path = ROOT) -> Path:
    """`model` with random weights (serving_env's) built as the cpu image builds it
    (`python -m app.model.ir.build`), from `checkout`'s app; returns `out`."""
    subprocess.run(
        [sys.executable, "-m", "app.model.ir.build", model, "random", "--out", str(out)],
        cwd=checkout,
        check=True,
        capture_output=True,
        timeout=900,
    )
    return out


def make_server(config: ServerConfig, model: str, log_dir: Path) -> Server:
    """The server, not started yet: what it needs before it starts (TorchServe's archive) is
    done here, outside the start-up time measured."""
    slug = config.name.split(" (")[0].replace(" ", "-").replace(",", "").replace("/", "")
    log_path = log_dir / f"{slug}.log"
    if config.kind == "torchserve":
        assert config.torchserve is not None
        return torchserve.TorchServeProcess(config.torchserve, log_dir / slug, log_path)
    if config.kind == "baseline":
        port = free_port()
        command = [sys.executable, "-m", "bench.lib.baseline_server", "--port", str(port),
                   "--model", model, "--device", config.env.get("device", "cpu")]  # fmt: skip
        return ManagedProcess(command, env={}, log_path=log_path, port=port)
    # The gRPC listener (default 8001) on a free port too: two servers on one machine, ours or
    # another sweep's, would otherwise fight over it and the second would not start.
    return app_process({"SERVING_GRPC_PORT": str(free_port()), **config.env}, log_path=log_path)


def start_and_wait(
    config: ServerConfig, model: str, log_dir: Path
) -> tuple[Server, dict[str, Any]]:
    """The server, started and ready, with its start-up time and resident memory."""
    server = make_server(config, model, log_dir)
    started = time.monotonic()
    server.start()
    try:
        server.wait_ready(timeout_s=900)
    except BaseException:
        server.terminate()
        raise
    # Process start to ready: imports, load, conversion, calibration, warm-up (TorchServe:
    # the JVM, then every worker READY).
    ready = {"ready_s": round(time.monotonic() - started, 1),
             "rss_ready_mb": round(server.rss_bytes() / 2**20, 1)}  # fmt: skip
    return server, ready


def process_cpu_s(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the processes of a process group (a server and its
    workers)."""
    ticks = sum(int(f[11]) + int(f[12]) for f in group_stat(pgid).values())  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_idle(server: Server, *, busy_below: float = 0.2, timeout_s: float = 180.0) -> float:
    """Until the server uses less than `busy_below` of a CPU over a second: a server that does
    not drop abandoned requests (the baseline's thread pool, TorchServe's queue) keeps
    computing its backlog after the clients stop, on the CPUs the next point measures with.
    Returns the seconds waited."""
    started = time.monotonic()
    pgid = server.pid
    before = group_cpu_s(pgid)
    while time.monotonic() - started < timeout_s:
        time.sleep(1.0)
        after = group_cpu_s(pgid)
        if after - before < busy_below:
            break
        before = after
    return round(time.monotonic() - started, 1)
