"""Protocol servers for the tests, each on a real socket in a thread of its own with its own
event loop, so the synchronous clients under test (tritonclient) can call them from the test."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from app.oip.grpc.interceptors import CallObserver
from app.oip.grpc.server import OipGrpcServer, start_grpc_server
from app.oip.handler import ServerInfo
from app.oip.model import OipModel
from app.oip.tensors import Limits

T = TypeVar("T")
SERVER_INFO = ServerInfo(name="resnet-serving", version="0.0.test")


class LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class GrpcServerThread:
    def __init__(
        self,
        model: OipModel,
        *,
        limits: Limits,
        api_keys: list[bytes] | None = None,
        default_timeout_s: float = 600.0,
        max_timeout_s: float = 600.0,
        observer: CallObserver | None = None,
    ) -> None:
        self.loop = LoopThread()
        self.server: OipGrpcServer = self.loop.run(
            start_grpc_server(
                lambda: model,
                port=0,
                host="127.0.0.1",
                api_keys=api_keys or [],
                limits=limits,
                server_info=SERVER_INFO,
                default_timeout_s=default_timeout_s,
                max_timeout_s=max_timeout_s,
                observer=observer,
            )
        )
        self.target = f"127.0.0.1:{self.server.port}"

    def stop_later(self, grace: float | None) -> Any:
        """Begin stopping; returns a future that resolves when the server has stopped."""
        return asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop.loop)

    def close(self) -> None:
        self.loop.run(self.server.stop(None))
        self.loop.close()


class UvicornThread:
    """A real uvicorn server for `app` on a free port of 127.0.0.1."""

    def __init__(self, app: FastAPI) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
