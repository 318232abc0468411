"""One command for the whole performance picture, measured in one run on one machine:

1. in-process ceilings of each backend (no HTTP): the model alone, and the whole pipeline
   (decode + preprocess + model) for the end-to-end ceiling;
2. decode + preprocess cost (small photo, 12 MP photo, with and without draft decoding);
3. a closed-loop concurrency sweep against the plain per-request baseline server, our server
   in each configuration (the defaults first: OpenVINO on a CPU) and TorchServe 0.12 as a peer
   (when bench/torchserve/setup.sh has installed it; skipped with a message otherwise), with
   each server's start-up time to ready;
4. the targets of docs/PERFORMANCE.md evaluated in this run (absolute figures and ratios);
5. JSON results and a PNG plot in bench/results/, and docs/PERFORMANCE.md's generated tables
   rewritten from them (when --out is bench/results/, the default).

    python -m bench.run_all                      # the full run (about 20 minutes)
    python -m bench.run_all --quick              # a smoke run (about two minutes)
    python -m bench.run_all --compile            # also the torch.compile configuration
    python -m bench.run_all --peers              # side by side only: baseline, defaults,
                                                 # TorchServe, all up at once, client counts
                                                 # interleaved (run_all-peers.json, ~15 min)

A command only: what it runs is bench/lib/ (servers, sweeps, targets), bench/ceiling.py and
bench/preprocess_bench.py; nothing imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import ceiling, preprocess_bench, report
from bench.lib.machine import machine_info
from bench.lib.plot import plot_sweep
from bench.lib.results import RESULTS, command_line, write_result
from bench.lib.sweep import choose_configs, sweep, sweep_side_by_side
from bench.lib.targets import evaluate
from harness.process import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--concurrency", default="1,4,10,32,64")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    parser.add_argument("--compile", action="store_true", help="add the compiled configuration")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words; keep only configurations whose name contains one "
        "(the baseline always runs), e.g. --only cuda",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="the side-by-side table only: the baseline, the defaults and TorchServe, all up at "
        "once, each client count against each in turn (results tagged 'peers' unless --tag)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short and small")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="suffix for result file names")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.concurrency = "1,4"
    if args.peers and not args.tag:
        args.tag = "peers"
    levels = [int(x) for x in args.concurrency.split(",")]
    suffix = f"-{args.tag}" if args.tag else ""
    started = time.time()

    configs = choose_configs(
        args.model,
        quick=args.quick,
        peers=args.peers,
        only=args.only,
        with_compile=args.compile,
        with_cuda=torch.cuda.is_available(),
    )
    backends = list(dict.fromkeys(c.backend for c in configs if c.backend))
    ceiling_rows = ceiling.run_for(
        args.model, backends, seconds_per_point=1.0 if args.quick else 5.0
    )
    preprocess_rows = preprocess_bench.run(args.model, 0.5 if args.quick else 3.0)
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        if args.peers:
            e2e = sweep_side_by_side(
                configs, args.model, levels, duration_s=args.duration, log_dir=Path(tmp)
            )
        else:
            e2e = [
                row
                for config in configs
                for row in sweep(
                    config, args.model, levels, duration_s=args.duration, log_dir=Path(tmp)
                )
            ]

    result: dict[str, Any] = {
        "command": command_line("bench.run_all", argv),
        "machine": machine_info(),
        "model": args.model,
        "duration_s_per_point": args.duration,
        "ceiling": ceiling_rows,
        "preprocess": preprocess_rows,
        "e2e": e2e,
        "targets": evaluate(configs, e2e, ceiling_rows),
        "wall_s": round(time.time() - started, 1),
    }
    machine = result["machine"]
    json_path = write_result(args.out / f"run_all{suffix}.json", result)
    plot_sweep(
        e2e,
        args.out / f"throughput_latency{suffix}.png",
        title=f"{args.model} on {machine['cpu']}, {machine['cpus_available']} CPUs",
    )
    print(json.dumps(result["targets"], indent=2))
    print(f"wrote {json_path}")
    if args.out.resolve() == RESULTS.resolve():
        # The recorded results changed: the document's generated tables follow in the same
        # command (what `python -m bench.report --write` does; a test holds them equal).
        report.write_doc()
        print(f"refreshed the generated tables of {report.DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
