"""In-process ceilings: how fast the model itself runs, without HTTP, decoding or queueing.

For each backend configuration (precision, compiled or not) and batch size, the median time of
a forward pass over real preprocessed photographs, and the images per second that gives. The
end-to-end benchmark is judged against the fastest of these that the server can run.

    python -m bench.ceiling --model resnet50 --batch-sizes 1,8 --json ceiling.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from app.cpu import available_cpus
from app.preprocess import Preprocessor
from app.runtime import ModelRuntime
from app.runtime_options import DeviceChoice, Precision
from app.weights import load_model, resolve_weights
from bench.images import sample_photos


@dataclass(frozen=True)
class Backend:
    name: str
    precision: Precision
    compiled: bool
    device: DeviceChoice = DeviceChoice.CPU


BACKENDS = {
    "fp32": Backend("fp32", Precision.FP32, False),
    "bf16": Backend("bf16", Precision.BF16, False),
    "fp32-compiled": Backend("fp32-compiled", Precision.FP32, True),
    "bf16-compiled": Backend("bf16-compiled", Precision.BF16, True),
    "cuda-bf16": Backend("cuda-bf16", Precision.BF16, False, DeviceChoice.CUDA),
    "cuda-fp32": Backend("cuda-fp32", Precision.FP32, False, DeviceChoice.CUDA),
}


@dataclass(frozen=True)
class CeilingResult:
    backend: str
    threads: int
    batch_size: int
    median_batch_ms: float
    images_per_s: float
    warmup_s: float
    iterations: int


def measure(
    model_name: str,
    backend: Backend,
    batch_sizes: list[int],
    *,
    seconds_per_point: float,
    num_threads: int,
) -> list[CeilingResult]:
    source = resolve_weights(model_name, "random", allow_download=False)
    runtime = ModelRuntime(
        load_model(source),
        num_threads=num_threads,
        device=backend.device,
        precision=backend.precision,
        compile_model=backend.compiled,
    )
    pre = Preprocessor.from_transforms(source.meta_weights.transforms())
    photos = [pre(p) for p in sample_photos()]
    warmup_s = runtime.warm_up(batch_sizes, pre.crop_size)
    results = []
    for size in batch_sizes:
        batch = torch.stack([photos[i % len(photos)] for i in range(size)])
        timings: list[float] = []
        deadline = time.perf_counter() + seconds_per_point
        while time.perf_counter() < deadline or len(timings) < 3:
            started = time.perf_counter()
            runtime.infer(batch)
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - started)
        median = statistics.median(timings)
        results.append(
            CeilingResult(
                backend=backend.name,
                threads=num_threads,
                batch_size=size,
                median_batch_ms=round(median * 1000, 3),
                images_per_s=round(size / median, 2),
                warmup_s=round(warmup_s, 2),
                iterations=len(timings),
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--backends", default="fp32,bf16")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="0 = available CPUs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    threads = args.threads or available_cpus()
    rows = []
    for name in args.backends.split(","):
        for result in measure(
            args.model, BACKENDS[name], sizes, seconds_per_point=args.seconds, num_threads=threads
        ):
            rows.append(asdict(result))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
