"""A real Redis for the tests and the cache benchmark: Debian's `redis-server` (scripts/
install.sh installs it) on a free loopback port, with a password, no persistence and its data
in memory only, in a process group of its own so that it can be paused (SIGSTOP: a hung Redis
whose kernel still accepts connections), killed, and started again on the same port."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from harness.process import free_port


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


class RedisServer:
    def __init__(self, log_path: Path, *, port: int | None = None, password: str | None = None):
        self.port = port or free_port()
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Without the password: the app takes it from SERVING_CACHE_REDIS_PASSWORD, or from
        `url_with_password`."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url_with_password(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server not found: scripts/install.sh installs it")
        # The password goes in on stdin as a config file ("-"), not in the arguments (ps).
        config = (
            f'port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\nsave ""\n'
            "appendonly no\nprotected-mode yes\ndaemonize no\nmaxmemory 64mb\n"
            "maxmemory-policy allkeys-lru\n"
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert self.proc.stdin is not None
        self.proc.stdin.write(config.encode())
        self.proc.stdin.close()
        self.wait_answering()
        return self

    def client(self, timeout_s: float = 5.0) -> redis.Redis:
        """A client of the tests' own (redis-py, synchronous), with the password."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )  # fmt: skip

    def wait_answering(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with self.client(timeout_s=1.0) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
