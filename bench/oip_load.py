"""A closed loop over any transport, for bench/oip_compare.py: N clients, each sending its next
request as soon as the previous one is answered (bench/lib/load.py's pattern), with the CPU time
the server process and this process spent during the counted window.

Senders replay bytes built once and read nothing but the status, over HTTP (httpx, configured
as bench/lib/load.py configures it) or gRPC (grpc.aio, bytes in and out, no protobuf work), so
the client's own cost stays as small and as alike as two transports allow.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import grpc
import httpx

from bench.lib.servers import process_cpu_s

Send = Callable[[], Awaitable[str]]  # one request; "ok" or what went wrong
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
TIMEOUT_S = 60.0


@dataclass
class Window:
    """What one closed loop measured in its counted window."""

    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0


async def closed_loop(
    senders: list[Send], *, duration_s: float, warmup_s: float, server_pid: int
) -> Window:
    """One client per sender for warmup_s (not counted), then duration_s (counted).

    A request counts when its answer arrives within the counted window, whenever it was sent:
    on windows of a few seconds, counting only those both sent and answered inside (as
    bench/lib/load.py does over 20 s) would drop the requests in flight at the end, about
    N x latency / window of them."""
    window = Window(duration_s=duration_s)
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def client(send: Send) -> None:
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            outcome = await send()
            done = time.perf_counter()
            if measure_from <= done <= stop_at:
                if outcome == "ok":
                    window.latencies_s.append(done - sent)
                else:
                    window.failures[outcome] += 1

    async def cpu_clock() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        server, me = process_cpu_s(server_pid), time.process_time()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        window.server_cpu_s = process_cpu_s(server_pid) - server
        window.client_cpu_s = time.process_time() - me

    await asyncio.gather(cpu_clock(), *(client(s) for s in senders))
    return window


@asynccontextmanager
async def http_senders(
    url: str, body: bytes, headers: dict[str, str], clients: int
) -> AsyncIterator[list[Send]]:
    """POSTs of `body` over one connection per client, as bench/lib/load.py sends them."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S) as session:

        async def send() -> str:
            try:
                response = await session.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return type(exc).__name__
            return "ok" if response.status_code == 200 else f"http_{response.status_code}"

        yield [send] * clients


@asynccontextmanager
async def grpc_senders(target: str, request: bytes, clients: int) -> AsyncIterator[list[Send]]:
    """ModelInfer calls of a serialized request, one channel (one connection) per client."""
    async with AsyncExitStack() as stack:
        senders: list[Send] = []
        for _ in range(clients):
            # A local subchannel pool: otherwise channels to one target share one connection,
            # where HTTP has one per client.
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            )
            senders.append(_grpc_send(channel.unary_unary(MODEL_INFER), request))
        yield senders


def _grpc_send(call: grpc.aio.UnaryUnaryMultiCallable, request: bytes) -> Send:
    async def send() -> str:
        try:
            await call(request, timeout=TIMEOUT_S)  # no serializers: bytes go as they are
        except grpc.aio.AioRpcError as exc:
            return f"grpc_{exc.code().name}"
        return "ok"

    return send
