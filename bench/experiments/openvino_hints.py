"""OpenVINO's thread settings, measured in process: the LATENCY hint (one stream with every
thread, one request at a time: what the batcher does) against the THROUGHPUT hint (one stream
per CPU, as many requests in flight as streams: what a batcher running several batches at once
could do).

    python -m bench.experiments.openvino_hints --json bench/results/openvino_hints.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.model.backends.convert import convert
from app.model.backends.openvino_backend import import_openvino
from app.model.cpu import available_cpus, cpu_has_native_bf16, cpu_model_name
from app.model.weights import load_model, resolve_weights
from bench.lib.results import command_line, write_result


def images_per_s(compiled: Any, batch: int, in_flight: int, seconds: float) -> float:
    """Images/s with `in_flight` requests kept busy (an AsyncInferQueue of that size)."""
    ov = import_openvino()
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    queue = ov.AsyncInferQueue(compiled, in_flight)
    for _ in range(in_flight * 2):  # warm-up
        queue.start_async({0: x})
    queue.wait_all()
    rates = []
    for _ in range(3):
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            queue.start_async({0: x})
            done += 1
        queue.wait_all()
        rates.append(done * batch / (time.perf_counter() - started))
    return statistics.median(rates)


def run(model_name: str, threads: int, seconds: float) -> dict[str, Any]:
    ov = import_openvino()
    source = resolve_weights(model_name, "random", allow_download=False)
    model = convert(load_model(source).model, 224)
    precision = "bf16" if cpu_has_native_bf16() else "f32"
    core = ov.Core()
    rows = []
    for hint, streams in (("LATENCY", 1), ("THROUGHPUT", threads)):
        config = {
            "PERFORMANCE_HINT": hint,
            "NUM_STREAMS": str(streams),
            "INFERENCE_NUM_THREADS": str(threads),
            "INFERENCE_PRECISION_HINT": precision,
            "ENABLE_CPU_PINNING": "NO",
        }
        compiled = core.compile_model(model, "CPU", config)
        got_streams = int(compiled.get_property("NUM_STREAMS"))
        for batch in (1, 8):
            for in_flight in sorted({1, got_streams}):
                rate = images_per_s(compiled, batch, in_flight, seconds)
                rows.append({"hint": hint, "streams": got_streams, "threads": threads,
                             "batch_size": batch, "in_flight": in_flight,
                             "images_per_s": round(rate, 1)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return {"model": model_name, "precision": precision, "cpu": cpu_model_name(),
            "openvino": ov.get_version(), "rows": rows}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--threads", type=int, default=0, help="0 = available CPUs")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = run(args.model, args.threads or available_cpus(), args.seconds)
    report["command"] = command_line("bench.experiments.openvino_hints", argv)
    if args.json:
        write_result(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
