"""Overload: three times the sustainable load for a minute, then back to normal.

1. sustainable throughput S: closed loop at `--clients` for `--measure` seconds;
2. burst: open loop, requests arriving at `--factor` x S per second for `--burst` seconds,
   whatever the server does (clients that do not slow down, as real traffic does not);
3. recovery: closed loop again, throughput per second until it is back to 90% of S.

Recorded: accepted (200), refused (503; how many without Retry-After) and timed-out (504)
counts, every other outcome, latency percentiles of accepted requests and of refusals, the
server's peak memory, and the recovery time. tests/test_overload.py runs a short burst and
checks the behaviour only; the figures are benchmarks (docs/PERFORMANCE.md).

    python -m bench.overload --json bench/results/overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.lib.images import small_jpeg
from bench.lib.load import percentile, run_load
from bench.lib.results import command_line, write_result
from bench.lib.servers import serving_env
from harness.process import ManagedProcess, app_process

# The server closes a keep-alive connection idle for 5 s (app/__main__.py); httpx's own expiry
# is also 5 s by default, so an open loop's pooled connection could be reused at the instant
# the server closes it, a RemoteProtocolError that says nothing about overload. Idle
# connections are dropped here first, as a well-behaved client behind a proxy does.
CLIENT_LIMITS = httpx.Limits(
    max_connections=2000, max_keepalive_connections=200, keepalive_expiry=1.0
)


@dataclass
class BurstResult:
    offered_rps: float
    duration_s: float
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    refused_without_retry_after: int = 0
    # 504: the deadline passed while the image was queued (dropped before the model ran).
    timed_out: int = 0
    other: dict[str, int] = field(default_factory=dict)
    accepted_p50_ms: float = 0.0
    accepted_p95_ms: float = 0.0
    accepted_p99_ms: float = 0.0
    # The server's own view (timing_ms.total): from the request reaching the handler to the
    # answer. The client's figures add whatever waited in the client and in the TCP backlog.
    accepted_server_p95_ms: float = 0.0
    refused_p95_ms: float = 0.0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0


async def open_loop(
    url: str, body: bytes, rate: float, duration_s: float, server: ManagedProcess
) -> BurstResult:
    """Requests at a fixed arrival rate, each on its own task; outcomes and latencies kept."""
    result = BurstResult(offered_rps=round(rate, 2), duration_s=duration_s)
    accepted: list[float] = []
    server_side: list[float] = []
    refused: list[float] = []
    timed_out = 0
    no_retry_after = 0
    other: Counter[str] = Counter()
    result.rss_before_mb = round(server.rss_bytes() / 2**20, 1)
    peak = result.rss_before_mb
    async with httpx.AsyncClient(limits=CLIENT_LIMITS, timeout=60) as client:

        async def one() -> None:
            nonlocal timed_out, no_retry_after
            started = time.perf_counter()
            try:
                response = await client.post(
                    url, content=body, headers={"content-type": "image/jpeg"}
                )
                outcome = response.status_code
            except httpx.HTTPError as exc:
                other[type(exc).__name__] += 1
                return
            elapsed = time.perf_counter() - started
            if outcome == 200:
                accepted.append(elapsed)
                server_side.append(float(response.json()["timing_ms"]["total"]))
            elif outcome == 503:
                refused.append(elapsed)
                no_retry_after += "retry-after" not in response.headers
            elif outcome == 504:
                timed_out += 1
            else:
                other[f"http_{outcome}"] += 1

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        interval = 1.0 / rate
        next_at = start
        while next_at < start + duration_s:
            now = time.perf_counter()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            tasks.append(asyncio.create_task(one()))
            next_at += interval
            if len(tasks) % 20 == 0:
                peak = max(peak, server.rss_bytes() / 2**20)
        await asyncio.gather(*tasks)
    peak = max(peak, server.rss_bytes() / 2**20)
    ok = sorted(x * 1000 for x in accepted)
    no = sorted(x * 1000 for x in refused)
    result.sent = len(tasks)
    result.accepted = len(ok)
    result.refused = len(no)
    result.refused_without_retry_after = no_retry_after
    result.timed_out = timed_out
    result.other = dict(other)
    result.accepted_p50_ms = round(percentile(ok, 50), 1)
    result.accepted_p95_ms = round(percentile(ok, 95), 1)
    result.accepted_p99_ms = round(percentile(ok, 99), 1)
    result.accepted_server_p95_ms = round(percentile(sorted(server_side), 95), 1)
    result.refused_p95_ms = round(percentile(no, 95), 1)
    result.rss_peak_mb = round(peak, 1)
    return result


async def recovery_time(
    url: str, body: bytes, clients: int, target_rps: float, limit_s: float
) -> tuple[float | None, list[int]]:
    """Seconds until a one-second window reaches `target_rps` successes again."""
    per_second: Counter[int] = Counter()
    start = time.perf_counter()
    stop_at = start + limit_s
    async with httpx.AsyncClient(limits=CLIENT_LIMITS, timeout=60) as client:

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                try:
                    response = await client.post(
                        url, content=body, headers={"content-type": "image/jpeg"}
                    )
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    per_second[int(time.perf_counter() - start)] += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    series = [per_second[s] for s in range(int(limit_s))]
    for second, count in enumerate(series):
        if count >= target_rps:
            return float(second + 1), series
    return None, series


def run(
    *,
    model: str = "resnet50",
    clients: int = 16,
    measure_s: float = 15.0,
    factor: float = 3.0,
    burst_s: float = 60.0,
    recovery_limit_s: float = 30.0,
    recovery_fraction: float = 0.9,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    settings = serving_env(model, **(env or {}))
    body = small_jpeg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        app_process(settings, log_path=Path(tmp) / "log") as server,
    ):
        server.wait_ready(timeout_s=600)
        url = f"{server.base_url}/predict"
        steady = asyncio.run(
            run_load(
                url,
                body,
                content_type="image/jpeg",
                concurrency=clients,
                duration_s=measure_s,
                warmup_s=3.0,
            )
        )
        sustainable = steady.throughput_rps
        burst = asyncio.run(open_loop(url, body, factor * sustainable, burst_s, server))
        recovered_after, series = asyncio.run(
            recovery_time(url, body, clients, recovery_fraction * sustainable, recovery_limit_s)
        )
        alive = server.proc is not None and server.proc.poll() is None
        exit_code = server.terminate()
        # Kept so that a failed run says why without the server's log file, which goes with
        # the temporary directory.
        log_tail = server.log_text().splitlines()[-40:]
    return {
        "model": model,
        "settings": settings,
        "sustainable": asdict(steady),
        "burst": asdict(burst),
        "recovery_fraction": recovery_fraction,
        "recovery_s": recovered_after,
        "recovery_rps_per_second": series,
        "server_alive_after_burst": alive,
        "server_exit_code": exit_code,
        "server_log_tail": log_tail,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--measure", type=float, default=15.0)
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--burst", type=float, default=60.0)
    parser.add_argument(
        "--recovery-fraction",
        type=float,
        default=0.9,
        help="recovered once a second's successes reach this fraction of the sustainable rate",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the server, repeatable"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    report = run(model=args.model, clients=args.clients, measure_s=args.measure,
                 factor=args.factor, burst_s=args.burst,
                 recovery_fraction=args.recovery_fraction, env=env)  # fmt: skip
    report["command"] = command_line("bench.overload", argv)
    print(json.dumps(report, indent=2))
    if args.json:
        write_result(args.json, report)
    problems = failed_claims(report)
    for problem in problems:
        print(f"overload: {problem}", file=sys.stderr)
    if problems:
        print("\n".join(report["server_log_tail"]), file=sys.stderr)
    return 1 if problems else 0


def failed_claims(report: dict[str, Any]) -> list[str]:
    """What the run shows wrong with the server: anything but 200, 503 and 504 under the
    burst, or a server that did not survive it."""
    problems = []
    if report["burst"]["other"]:
        problems.append(f"outcomes other than 200, 503 and 504: {report['burst']['other']}")
    if not report["server_alive_after_burst"]:
        problems.append("the server was not running after the burst")
    return problems


if __name__ == "__main__":
    sys.exit(main())
