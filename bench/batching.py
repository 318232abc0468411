"""Batching settings for the default (OpenVINO) model: SERVING_MAX_BATCH_DELAY_MS and
SERVING_MAX_BATCH_SIZE, swept at 1, 10 and 32 closed-loop clients in one run.

    python -m bench.batching --json bench/results/batching.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.lib.results import command_line, write_result
from bench.lib.servers import ServerConfig, serving_env
from bench.lib.sweep import sweep

VARIANTS = [
    ("delay 0 ms, batch 8", {"SERVING_MAX_BATCH_DELAY_MS": "0", "SERVING_MAX_BATCH_SIZE": "8"}),
    ("delay 1 ms, batch 8", {"SERVING_MAX_BATCH_DELAY_MS": "1", "SERVING_MAX_BATCH_SIZE": "8"}),
    ("delay 2 ms, batch 8", {"SERVING_MAX_BATCH_DELAY_MS": "2", "SERVING_MAX_BATCH_SIZE": "8"}),
    ("delay 5 ms, batch 8", {"SERVING_MAX_BATCH_DELAY_MS": "5", "SERVING_MAX_BATCH_SIZE": "8"}),
    ("delay 2 ms, batch 4", {"SERVING_MAX_BATCH_DELAY_MS": "2", "SERVING_MAX_BATCH_SIZE": "4"}),
    ("delay 2 ms, batch 16", {"SERVING_MAX_BATCH_DELAY_MS": "2", "SERVING_MAX_BATCH_SIZE": "16"}),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--concurrency", default="1,10,32")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    base = serving_env(args.model, SERVING_DEVICE="cpu")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        for name, env in VARIANTS:
            config = ServerConfig(name, "serving", {**base, **env})
            rows += sweep(config, args.model, levels, duration_s=args.duration, log_dir=Path(tmp))
    report = {
        "command": command_line("bench.batching", argv),
        "model": args.model,
        "duration_s_per_point": args.duration,
        "e2e": rows,
    }
    if args.json:
        write_result(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
