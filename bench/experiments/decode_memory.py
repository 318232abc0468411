"""The real memory peak of decoding + preprocessing one max-pixel image, per decoder and mode.

tracemalloc cannot see Pillow's and libwebp's C buffers, so each image is decoded in a fresh
subprocess and measured with the kernel's high-water mark of resident memory
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`): the peak after the decode minus the peak just
before it (taken once the codec is loaded and the file is in memory, when the current RSS is the
peak so far). The result, bytes per pixel, is what the server reserves from its decode budget
(app/images/decode_cost.py's table must be at least the measured figure:
tests/images/test_decode_cost.py).

    python -m bench.experiments.decode_memory        # all images, to stdout
    python -m bench.experiments.decode_memory --json bench/results/decode_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lib.memory import status_kib
from bench.lib.results import command_line, write_result
from harness.big_images import IMAGES
from harness.process import ROOT


def _rss_bytes() -> int:
    return status_kib(os.getpid(), "VmRSS") * 1024


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure_one(path: Path, model: str) -> dict[str, Any]:
    """In this (fresh) process: decode + preprocess the file once, as the server does."""
    from PIL import Image
    from torchvision.models import get_model_weights

    from app.images.decode import decode_image, open_image
    from app.images.decode_cost import decode_peak_bytes
    from app.images.decoder import PILLOW_BLOCK_BYTES
    from app.images.preprocess import Preprocessor

    Image.core.set_block_size(PILLOW_BLOCK_BYTES)  # type: ignore[attr-defined]  # as the server
    pre = Preprocessor.from_transforms(get_model_weights(model).DEFAULT.transforms())
    data = path.read_bytes()
    header = open_image(data, max_pixels=10**9, draft_short_side=pre.resize_size)
    info = {"format": header.format, "mode": header.mode, "size": list(header.size)}
    reserved = decode_peak_bytes(header, data)
    header.image.close()
    rss_before, peak_before = _rss_bytes(), _maxrss_bytes()
    started = time.perf_counter()
    decoded = decode_image(data, max_pixels=10**9, draft_short_side=pre.resize_size)
    tensor = pre(decoded.image)
    seconds = time.perf_counter() - started
    peak_after = _maxrss_bytes()
    width, height = decoded.original_size
    pixels = width * height
    growth = peak_after - max(peak_before, rss_before)
    del tensor, decoded
    return {
        **info,
        "pixels": pixels,
        "decoded_size": list(header.size),
        "rss_before_bytes": rss_before,
        "peak_growth_bytes": growth,
        # Per pixel of the image as decoded (JPEG: after draft scaling), as the budget counts.
        "peak_bytes_per_pixel": round(growth / (header.size[0] * header.size[1]), 3),
        "reserved_bytes": reserved,
        "reserved_over_peak": round(reserved / growth, 3) if growth > 0 else None,
        "seconds": round(seconds, 3),
    }


def run(names: list[str], model: str) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            make = IMAGES[name][2]
            path = Path(tmp) / "image"
            data = make()
            path.write_bytes(data)
            one = ["-m", "bench.experiments.decode_memory", "--one", str(path), "--model", model]
            out = subprocess.run(
                [sys.executable, *one],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            row = {"image": name, "bytes": len(data), **json.loads(out.stdout.splitlines()[-1])}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--images", nargs="*", default=list(IMAGES))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.model)))
        return 0
    rows = run(args.images, args.model)
    if args.json:
        result = {
            "benchmark": "decode_memory",
            "command": command_line("bench.experiments.decode_memory", argv),
            "method": "ru_maxrss growth in a fresh subprocess per image, decode + preprocess",
            "pillow": __import__("PIL").__version__,
            "results": rows,
        }
        write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
