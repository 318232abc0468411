"""Start a server process on a free loopback port, wait for it to be ready, stop it by PID.

The one process harness of the tests (through tests/helpers/process.py) and of the benchmarks
(which import it directly): the app, a baseline server, nginx or Prometheus, each in its own
process group with its output in a log file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_stat(pgid: int) -> dict[int, list[str]]:
    """The /proc/<pid>/stat fields, from the state on, of every process in a process group
    (a server and its workers: each server here starts in its own session, so its PID is its
    group). Field i here is field i + 3 of proc(5): 0 state, 2 pgrp, 11 utime, 12 stime."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            members[int(entry.name)] = fields
    return members


def app_command(*, without_torch: bool = False) -> list[str]:
    """`python -m app`; `without_torch`: as if torch were not installed (the CPU image's
    situation: harness/without_torch.py)."""
    if without_torch:
        return [sys.executable, "-m", "harness.without_torch", "app"]
    return [sys.executable, "-m", "app"]


class ManagedProcess:
    """A child process in its own process group, logging to a file."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: dict[str, str],
        log_path: Path,
        port: int,
        ready_path: str = "/ready",
        cwd: Path = ROOT,
    ) -> None:
        self.command = list(command)
        # Where it runs: `python -m app` imports the app of this checkout (another one, such as
        # a git worktree of an older revision, to measure two revisions side by side).
        self.cwd = cwd
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log_path = log_path
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: cleanup kills all of it
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.command} exited with {self.proc.returncode}:\n{self.log_text()}"
                    )
                try:
                    if client.get(self.ready_path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"not ready after {timeout_s}s:\n{self.log_text()}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL the group if it does not stop. Returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()


def app_process(
    env: dict[str, str],
    *,
    log_path: Path,
    port: int | None = None,
    cwd: Path = ROOT,
    without_torch: bool = False,
) -> ManagedProcess:
    """`python -m app` with these SERVING_ settings on loopback; the gRPC port is a free one too
    (several servers run side by side), unless `env` names it."""
    port = port or free_port()
    full_env = {
        "SERVING_HOST": "127.0.0.1",
        "SERVING_PORT": str(port),
        "SERVING_GRPC_PORT": str(free_port()),
        **env,
    }
    command = app_command(without_torch=without_torch)
    return ManagedProcess(command, env=full_env, log_path=log_path, port=port, cwd=cwd)
