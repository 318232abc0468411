"""Soak: steady load for a long time, sampling the server's resident memory and open file
descriptors. Growth is measured from the first sample after the warm-up (allocator pools and
caches fill during the first minute) to the last.

    python -m bench.soak --minutes 10 --concurrency 10 --json bench/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.lib.images import small_jpeg
from bench.lib.load import run_load
from bench.lib.results import command_line, write_result
from bench.lib.servers import serving_env
from harness.process import app_process


async def soak(
    base_url: str,
    sample: Any,
    *,
    minutes: float,
    concurrency: int,
    warmup_s: float,
    interval_s: float,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    samples: list[dict[str, float]] = []
    started = time.monotonic()

    async def sampler() -> None:
        while True:
            await asyncio.sleep(interval_s)
            samples.append({"t_s": round(time.monotonic() - started, 1), **sample()})

    task = asyncio.create_task(sampler())
    result = await run_load(
        f"{base_url}/predict",
        small_jpeg(),
        content_type="image/jpeg",
        concurrency=concurrency,
        duration_s=minutes * 60.0,
        warmup_s=warmup_s,
    )
    task.cancel()
    return asdict(result), samples


def growth(samples: list[dict[str, float]], key: str, after_s: float) -> float:
    steady = [s for s in samples if s["t_s"] >= after_s]
    if len(steady) < 2 or steady[0][key] == 0:
        return 0.0
    return (steady[-1][key] - steady[0][key]) / steady[0][key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before counting")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory() as tmp,
        app_process(serving_env(args.model), log_path=Path(tmp) / "log") as server,
    ):
        server.wait_ready(timeout_s=600)

        def sample() -> dict[str, float]:
            return {"rss_mb": round(server.rss_bytes() / 2**20, 1), "fds": server.open_fds()}

        load, samples = asyncio.run(
            soak(
                server.base_url,
                sample,
                minutes=args.minutes,
                concurrency=args.concurrency,
                warmup_s=args.warmup,
                interval_s=args.interval,
            )
        )
    rss_growth = round(growth(samples, "rss_mb", args.warmup), 4)
    fd_growth = round(growth(samples, "fds", args.warmup), 4)
    flat = rss_growth < 0.05 and fd_growth < 0.05
    report = {
        "command": command_line("bench.soak", argv),
        "load": load,
        "rss_growth": rss_growth,
        "fd_growth": fd_growth,
        "flat": flat,
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.json:
        write_result(args.json, report)
    return 0 if flat and load["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
