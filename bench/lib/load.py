"""A closed-loop HTTP load generator: N clients, each sending its next request as soon as the
previous one is answered, for a fixed time. Reports throughput, latency percentiles and every
failure by status.

Requests send the image as the raw body with an image/* content type, which both our server
and the baseline accept. The same tool drives every configuration, so their ratios are fair.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

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
