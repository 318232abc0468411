"""A closed-loop HTTP load generator: N clients, each sending its next request as soon as the
previous one is answered, for a fixed time. Reports throughput, latency percentiles and every
failure by status.

Requests send the image as the raw body with an image/* content type, which both our server
and the baseline accept. The same tool drives every configuration, so their ratios are fair.
`run_load` sends one body again and again; `run_sequence` sends many, in a given order (a
workload with repeats, for the prediction cache), and keeps what came back for each.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    ok: int
    failed: int
    failures: dict[str, int] = field(default_factory=dict)
    throughput_rps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(
    concurrency: int, duration_s: float, latencies_s: list[float], failures: Counter[str]
) -> LoadResult:
    lat = sorted(x * 1000.0 for x in latencies_s)
    return LoadResult(
        concurrency=concurrency,
        duration_s=round(duration_s, 3),
        ok=len(lat),
        failed=sum(failures.values()),
        failures=dict(failures),
        throughput_rps=round(len(lat) / duration_s, 3) if duration_s > 0 else 0.0,
        p50_ms=round(percentile(lat, 50), 2),
        p95_ms=round(percentile(lat, 95), 2),
        p99_ms=round(percentile(lat, 99), 2),
        mean_ms=round(statistics.fmean(lat), 2) if lat else 0.0,
        max_ms=round(lat[-1], 2) if lat else 0.0,
    )


async def run_load(
    url: str,
    body: bytes,
    *,
    content_type: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 2.0,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Closed loop for warmup_s (not counted) then duration_s (counted)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    request_headers = {"content-type": content_type, **(headers or {})}
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:

        async def worker() -> None:
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                try:
                    response = await client.post(url, content=body, headers=request_headers)
                    status = response.status_code
                    outcome = "ok" if status == 200 else f"http_{status}"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                done = time.perf_counter()
                if sent >= measure_from and done <= stop_at:
                    if outcome == "ok":
                        latencies.append(done - sent)
                    else:
                        failures[outcome] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise(concurrency, duration_s, latencies, failures)


@dataclass(frozen=True)
class Sent:
    """One request of a sequence: its place in the order, which body, when it left and came back
    (seconds since the load started), its outcome, and what `inspect` kept of the answer."""

    position: int
    body: int
    sent_s: float
    done_s: float
    outcome: str  # "ok", "http_<status>" or the client's exception
    detail: Any = None  # None when no answer came


async def run_sequence(
    url: str,
    bodies: Sequence[bytes],
    order: Sequence[int],
    *,
    content_type: str,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
    inspect: Callable[[httpx.Response], Any] | None = None,
) -> tuple[LoadResult, list[Sent]]:
    """Closed loop for `duration_s`, counted from the first request (no warm-up: the caller
    warms up as its workload allows). Each request's body is `bodies[order[i]]` for the next i,
    whichever client sends it, so the server sees the order as given; the clients stop early
    if it runs out (the result's duration is then the time it took). Returns the summary (the
    requests answered within the duration) and every request sent, answered in time or not."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    request_headers = {"content-type": content_type, **(headers or {})}
    sent: list[Sent] = []
    next_position = 0
    start = time.perf_counter()
    stop_at = start + duration_s

    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:

        async def worker() -> None:
            nonlocal next_position
            while next_position < len(order):
                began = time.perf_counter()
                if began >= stop_at:
                    return
                position = next_position
                next_position += 1
                body = order[position]
                detail = None
                try:
                    response = await client.post(url, content=bodies[body], headers=request_headers)
                    status = response.status_code
                    outcome = "ok" if status == 200 else f"http_{status}"
                    detail = inspect(response) if inspect is not None else None
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                done = time.perf_counter()
                sent.append(Sent(position, body, began - start, done - start, outcome, detail))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ran_s = min(duration_s, time.perf_counter() - start)
    in_time = [s for s in sent if s.done_s <= ran_s]
    latencies = [s.done_s - s.sent_s for s in in_time if s.outcome == "ok"]
    failures = Counter(s.outcome for s in in_time if s.outcome != "ok")
    sent.sort(key=lambda s: s.position)
    return summarise(concurrency, ran_s, latencies, failures), sent
