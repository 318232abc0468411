"""Clients of the router tests: many cheap HTTP requests at once, and gRPC calls that report the
version that answered.

`exchange` speaks HTTP/1.1 itself over asyncio streams, keep-alive, several connections at once:
the split is judged over thousands of requests, and a full client (httpx) spends more CPU per
request than the router and the app together on these 2-CPU machines."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from app.oip.grpc import grpc_predict_v2_pb2 as pb
from bench.router import Ports, Router
from helpers.process import ManagedProcess

V1, V2 = "v1", "v2"
MODEL = "resnet18"

LIVE = "/inference.GRPCInferenceService/ServerLive"
INFER = "/inference.GRPCInferenceService/ModelInfer"
VERSION_HEADER = "x-model-version"


@dataclass(frozen=True)
class Version:
    """One app process: the version it serves, and where it listens."""

    label: str
    process: ManagedProcess
    grpc_port: int

    @property
    def ports(self) -> Ports:
        return Ports(http=self.process.port, grpc=self.grpc_port)

    @property
    def base_url(self) -> str:
        return self.process.base_url


Versions = dict[str, Version]
RouterConfig = Callable[..., str]
StartRouter = Callable[..., Router]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def version(self) -> str | None:
        """Which version answered (None: not an app, the router itself)."""
        return self.headers.get(VERSION_HEADER)


def _request(method: str, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: router"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise AssertionError(f"a chunked answer, which exchange() does not read: {head!r}")
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


async def _exchange(
    port: int, requests: Sequence[bytes], concurrency: int, timeout_s: float
) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(requests)
    pending = iter(range(len(requests)))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in pending:
                writer.write(requests[i])
                await writer.drain()
                answer = answers[i] = await _answer(reader)
                if answer.headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    workers = (connection() for _ in range(min(concurrency, len(requests))))
    await asyncio.wait_for(asyncio.gather(*workers), timeout_s)
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def exchange(
    port: int,
    headers: Iterable[Mapping[str, str]],
    *,
    path: str = "/health",
    method: str = "GET",
    concurrency: int = 16,
    timeout_s: float = 300.0,
) -> list[Answer]:
    """One bodiless request per entry of `headers` (its extra headers), `concurrency` at a time
    over keep-alive connections to 127.0.0.1:`port`; the answers in the same order."""
    requests = [_request(method, path, h) for h in headers]
    return asyncio.run(_exchange(port, requests, concurrency, timeout_s))


def versions_of(answers: Iterable[Answer]) -> Counter[str | None]:
    """How many answers each version gave; every answer must be a 200."""
    answers = list(answers)
    failed = Counter((a.status, a.body[:200]) for a in answers if a.status != 200)
    assert not failed, failed
    return Counter(a.version for a in answers)


# --- gRPC ----------------------------------------------------------------------------------


def live_call(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        LIVE,
        request_serializer=pb.ServerLiveRequest.SerializeToString,
        response_deserializer=pb.ServerLiveResponse.FromString,
    )


def infer_call(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        INFER,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def infer_request(model: str, image: bytes) -> pb.ModelInferRequest:
    """A ModelInfer of one encoded image (the BYTES input `image`)."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="image",
        datatype="BYTES",
        shape=[1],
        contents=pb.InferTensorContents(bytes_contents=[image]),
    )
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


def grpc_versions(
    target: str, metadata: Sequence[Sequence[tuple[str, str]]], *, in_flight: int = 64
) -> list[str | None]:
    """ServerLive once per entry of `metadata` (its metadata), `in_flight` at a time on one
    channel: the version that answered each (initial metadata `x-model-version`)."""
    out: list[str | None] = []
    with grpc.insecure_channel(target) as channel:
        live = live_call(channel)
        for start in range(0, len(metadata), in_flight):
            calls = [
                live.future(pb.ServerLiveRequest(), metadata=tuple(md), timeout=60)
                for md in metadata[start : start + in_flight]
            ]
            for call in calls:
                assert call.result().live
                out.append(dict(call.initial_metadata()).get(VERSION_HEADER))
    return out


# --- upstreams that misbehave --------------------------------------------------------------


class FakeUpstream:
    """A TCP server on a free loopback port standing in for an app that misbehaves, counting the
    connections it accepts. Each connection is handled by `behaviour(n)` for the n-th one (from
    1): "close" reads the request and closes without an answer, "hang" reads it and never
    answers, "ok" answers 200 with `X-Model-Version: <version>` and closes."""

    def __init__(self, behaviour: Callable[[int], str], version: str = "fake") -> None:
        self.behaviour = behaviour
        self.version = version
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            conn.settimeout(10)
            try:
                conn.recv(65536)
            except OSError:
                conn.close()
                continue
            action = self.behaviour(self.accepted)
            if action == "hang":
                self._held.append(conn)
                continue
            if action == "ok":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                    + f"X-Model-Version: {self.version}\r\nConnection: close\r\n\r\n{{}}".encode()
                )
            conn.close()

    def close(self) -> None:
        self._server.close()
        for conn in self._held:
            conn.close()


def grpc_error(call: Callable[[], object]) -> Any:
    """The error `call` fails with: a grpc.RpcError, which is also a grpc.Call (code(),
    details(), initial_metadata())."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


# --- clients that keep sending until told to stop (reloads, a canary killed under load) ------


async def predict_until(
    client: httpx.AsyncClient,
    stop: asyncio.Event,
    image: bytes,
    headers: Mapping[str, str],
    outcomes: Counter[str],
    answered_by: Counter[str | None],
) -> None:
    """POST /predict over and over: each outcome counted (`http 200`, else what failed), and
    the version that answered each one."""
    while not stop.is_set():
        try:
            answer = await client.post("/predict", content=image, headers=dict(headers))
        except httpx.HTTPError as exc:
            outcomes[f"http {type(exc).__name__}: {exc!r}"] += 1
            continue
        ok = answer.status_code == 200
        outcomes["http 200" if ok else f"http {answer.status_code} {answer.text}"] += 1
        answered_by[answer.headers.get("x-model-version")] += 1


async def infer_until(
    target: str,
    stop: asyncio.Event,
    request: bytes,
    outcomes: Counter[str],
    *,
    metadata: Sequence[tuple[str, str]] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> None:
    """The protocol's gRPC ModelInfer over and over on one channel: each outcome counted
    (`grpc OK`, else the status and its details)."""
    async with grpc.aio.insecure_channel(target, options=list(options)) as channel:
        infer = channel.unary_unary(INFER)
        while not stop.is_set():
            try:
                await infer(request, metadata=tuple(metadata), timeout=60)
            except grpc.aio.AioRpcError as exc:
                outcomes[f"grpc {exc.code().name}: {exc.details()}"] += 1
                continue
            outcomes["grpc OK"] += 1
