"""In-process ceilings: how fast the model itself runs, without HTTP, decoding or queueing, and
how fast the whole pipeline runs in process (decode + preprocess + model, no HTTP).

For each backend configuration (engine, precision, compiled or not) and batch size, the median
time of a forward pass over real preprocessed photographs, and the images per second that gives.
`pipeline` rows add decoding and preprocessing the benchmark's JPEG for every image of the batch,
one after the other on the calling thread: the in-process end-to-end ceiling the HTTP server is
judged against (it does the same work, plus HTTP, on the same CPUs).

    python -m bench.ceiling --model resnet50 --backends openvino-bf16,torch-bf16 --json c.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.images.decode import decode_image
from app.images.preprocess import Preprocessor
from app.model.cpu import available_cpus, default_torch_threads
from app.model.options import BackendChoice, DeviceChoice, Precision
from app.model.runtime import ModelRuntime
from app.model.weights import load_model, resolve_weights
from app.serving.batcher import Array
from bench.lib.images import sample_photos, small_jpeg
from bench.lib.results import command_line, write_result
from bench.lib.timing import median_s


@dataclass(frozen=True)
class Backend:
    name: str
    precision: Precision
    compiled: bool
    device: DeviceChoice = DeviceChoice.CPU
    engine: BackendChoice = BackendChoice.TORCH


_OV = BackendChoice.OPENVINO
BACKENDS = {
    "openvino-fp32": Backend("openvino-fp32", Precision.FP32, False, engine=_OV),
    "openvino-bf16": Backend("openvino-bf16", Precision.BF16, False, engine=_OV),
    "openvino-int8": Backend("openvino-int8", Precision.INT8, False, engine=_OV),
    "torch-fp32": Backend("torch-fp32", Precision.FP32, False),
    "torch-bf16": Backend("torch-bf16", Precision.BF16, False),
    "torch-fp32-compiled": Backend("torch-fp32-compiled", Precision.FP32, True),
    "torch-bf16-compiled": Backend("torch-bf16-compiled", Precision.BF16, True),
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
    # "model": the forward pass alone; "pipeline": decode + preprocess + forward pass.
    kind: str = "model"
    build_s: float = 0.0


def _synchronized(work: Callable[[], object]) -> None:
    """`work` on a GPU, timed to its end rather than to its launch."""
    work()
    torch.cuda.synchronize()


def _pipeline(runtime: ModelRuntime, decoded_batch: Callable[[int], Array], size: int) -> Array:
    return runtime.infer(decoded_batch(size))


def measure(
    model_name: str,
    backend: Backend,
    batch_sizes: list[int],
    *,
    seconds_per_point: float,
    num_threads: int,
    pipeline: bool = False,
) -> list[CeilingResult]:
    source = resolve_weights(model_name, "random", allow_download=False)
    started = time.perf_counter()
    runtime = ModelRuntime(
        load_model(source),
        num_threads=num_threads,
        device=backend.device,
        precision=backend.precision,
        compile_model=backend.compiled,
        backend=backend.engine,
    )
    build_s = time.perf_counter() - started
    pre = Preprocessor.from_transforms(source.meta_weights.transforms())
    photos = [pre(p) for p in sample_photos()]
    warmup_s = runtime.warm_up(batch_sizes, pre.crop_size)
    sync = runtime.device == "cuda"
    jpeg = small_jpeg()

    def decoded_batch(size: int) -> Array:
        images = []
        for _ in range(size):
            decoded = decode_image(jpeg, max_pixels=50_000_000, draft_short_side=pre.resize_size)
            images.append(pre(decoded.image))
        return np.stack(images)

    results = []
    for size in batch_sizes:
        batch = np.stack([photos[i % len(photos)] for i in range(size)])
        kinds: list[tuple[str, Callable[[], object]]] = [
            ("model", functools.partial(runtime.infer, batch))
        ]
        if pipeline:
            kinds.append(("pipeline", functools.partial(_pipeline, runtime, decoded_batch, size)))
        for kind, work in kinds:
            timed = functools.partial(_synchronized, work) if sync else work
            median, iterations = median_s(timed, seconds_per_point)
            results.append(
                CeilingResult(
                    backend=backend.name,
                    threads=num_threads,
                    batch_size=size,
                    median_batch_ms=round(median * 1000, 3),
                    images_per_s=round(size / median, 2),
                    warmup_s=round(warmup_s, 2),
                    iterations=iterations,
                    kind=kind,
                    build_s=round(build_s, 2),
                )
            )
    return results


def run_for(
    model_name: str, backends: list[str], *, seconds_per_point: float
) -> list[dict[str, Any]]:
    """The ceilings `python -m bench.run_all` records for its configurations' backends: on a
    CPU at every CPU and at one fewer, batch 1 and 8; on a GPU at its default CPU threads,
    batch 1, 8 and 32; the whole pipeline too for the first backend (the configuration judged)
    at every CPU."""
    rows: list[dict[str, Any]] = []
    thread_counts = sorted({available_cpus(), max(1, available_cpus() - 1)})
    for name in backends:
        on_gpu = name.startswith("cuda")
        for threads in [default_torch_threads(device_type="cuda")] if on_gpu else thread_counts:
            for result in measure(
                model_name,
                BACKENDS[name],
                [1, 8] if not name.startswith("cuda") else [1, 8, 32],
                seconds_per_point=seconds_per_point,
                num_threads=threads,
                # The end-to-end ceiling, for the configuration judged (the defaults).
                pipeline=name == backends[0] and threads == max(thread_counts),
            ):
                rows.append(asdict(result))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--backends", default="openvino-bf16,torch-bf16")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="0 = available CPUs")
    parser.add_argument("--pipeline", action="store_true", help="also decode + preprocess")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    threads = args.threads or available_cpus()
    rows = []
    for name in args.backends.split(","):
        for result in measure(
            args.model,
            BACKENDS[name],
            sizes,
            seconds_per_point=args.seconds,
            num_threads=threads,
            pipeline=args.pipeline,
        ):
            rows.append(asdict(result))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        write_result(
            args.json,
            {"command": command_line("bench.ceiling", argv), "model": args.model, "rows": rows},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
