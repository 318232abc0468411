"""Decode + preprocess cost per image: a small web photo and a 12-megapixel camera JPEG, with
and without JPEG draft-mode (DCT-scaled) decoding.

    python -m bench.preprocess_bench --json preprocess.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchvision.models import get_model_weights

from app.images.decode import decode_image
from app.images.preprocess import Preprocessor
from bench.lib.images import large_jpeg, small_jpeg
from bench.lib.results import command_line, write_result
from bench.lib.timing import median_s


def time_decode(data: bytes, pre: Preprocessor, *, draft: bool, seconds: float) -> float:
    """Median milliseconds for decode + preprocess of `data`."""
    draft_short_side = pre.resize_size if draft else None

    def work() -> None:
        pre(decode_image(data, max_pixels=50_000_000, draft_short_side=draft_short_side).image)

    return median_s(work, seconds, at_least=5)[0] * 1000.0


def run(model_name: str, seconds: float) -> list[dict[str, object]]:
    pre = Preprocessor.from_transforms(get_model_weights(model_name).DEFAULT.transforms())
    rows: list[dict[str, object]] = []
    for label, data in (
        ("small 512x600 JPEG", small_jpeg()),
        ("12 MP 4000x3000 JPEG", large_jpeg()),
    ):
        for draft in (False, True):
            ms = time_decode(data, pre, draft=draft, seconds=seconds)
            rows.append(
                {"image": label, "bytes": len(data), "draft": draft, "median_ms": round(ms, 2)}
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = run(args.model, args.seconds)
    if args.json:
        write_result(
            args.json,
            {"command": command_line("bench.preprocess_bench", argv), "model": args.model,
             "rows": rows},
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
