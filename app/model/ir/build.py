"""Builds the model the CPU image serves, at image build time (the Dockerfile's convert stage):

    python -m app.model.ir.build MODEL WEIGHTS --out DIR [--precision fp32|int8] [--seed N]
                                 [--from WEIGHTS_DIR]

The weights are baked as for the GPU image (app/model/bake.py: downloaded or taken from
WEIGHTS_DIR, hash-checked, or `random`), loaded into torchvision's module, converted to OpenVINO
through torch.export (app/model/backends/convert.py) and, for int8, quantized with NNCF on the
calibration photographs (app/model/backends/int8.py), so that start-up does none of it. DIR then
holds model.xml, model.bin (fp32 weights kept as they are, not compressed to fp16) and
manifest.json. Last, the package is opened as the server opens it and its answers are compared
with torch's on the same inputs: a conversion that changed the model fails the build.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from app.model.backends.convert import convert
from app.model.backends.openvino_backend import OpenVINOBackend, import_openvino, read_model
from app.model.bake import bake, weights_arguments
from app.model.ir.manifest import BIN, IR_PRECISIONS, XML, Manifest, file_sha256
from app.model.ir.package import ModelPackage, Wanted, open_package
from app.model.options import Precision
from app.model.weights import LoadedModel, load_model, resolve_weights, weights_names

# fp32 IR against torch on the same inputs: the same arithmetic in another order.
_FP32_TOLERANCE = 1e-3


def _versions(precision: str) -> dict[str, str]:
    names = ["torch", "torchvision", "openvino"] + (["nncf"] if precision == "int8" else [])
    return {name: metadata.version(name) for name in names}


def _compare(package: ModelPackage, loaded: LoadedModel) -> str:
    """The IR compiled as the server compiles it (fp32 hint), against torch's module."""
    crop = package.spec.preprocessor.crop_size
    inputs = np.random.default_rng(0).standard_normal((2, 3, crop, crop)).astype(np.float32)
    precision = Precision.INT8 if package.quantized else Precision.FP32
    engine = OpenVINOBackend(
        read_model(package.xml), precision=precision, num_threads=0, bf16_native=False
    )
    ours = engine.logits(inputs)
    with torch.inference_mode():
        reference = loaded.model(torch.from_numpy(inputs)).numpy()
    if ours.shape != reference.shape:
        raise RuntimeError(f"the IR gives {ours.shape}, torch {reference.shape}")
    if package.quantized:
        return f"int8 IR runs: logits {ours.shape}"
    scale = float(np.abs(reference).max()) or 1.0
    error = float(np.abs(ours - reference).max()) / scale
    if error > _FP32_TOLERANCE:
        raise RuntimeError(f"the IR's logits differ from torch's by {error:.2e} of their range")
    return f"IR logits within {error:.1e} of torch's"


def build(
    model_name: str,
    weights: str,
    out: Path,
    *,
    precision: str = "fp32",
    seed: int = 0,
    local_dir: Path | None = None,
) -> list[str]:
    """Writes the package into `out`; returns a line for each step, for the build log."""
    if precision not in IR_PRECISIONS:
        raise ValueError(f"--precision {precision}: one of {', '.join(IR_PRECISIONS)}")
    steps = [bake(model_name, weights, local_dir=local_dir)]
    source = resolve_weights(model_name, weights, allow_download=False)
    loaded = load_model(source, seed=seed)
    spec = loaded.spec
    quantize = None
    if precision == "int8":
        from app.model.backends.int8 import quantizer

        quantize = quantizer(spec.preprocessor)
    ov_model = convert(loaded.model, spec.preprocessor.crop_size)
    if quantize is not None:
        ov_model = quantize(ov_model)
    out.mkdir(parents=True, exist_ok=True)
    import_openvino().save_model(ov_model, str(out / XML), compress_to_fp16=False)
    manifest = Manifest(
        model=spec.model_name,
        weights_id=spec.weights_id,
        weights_names=weights_names(source),
        weights_sha256=None if source.path is None else file_sha256(source.path),
        weights_source=spec.weights_source,
        random_seed=seed if spec.random_weights else None,
        precision=precision,
        labels=spec.labels,
        preprocessing=spec.preprocessor.to_dict(),
        files={name: file_sha256(out / name) for name in (XML, BIN)},
        built_with=_versions(precision),
    )
    manifest.write(out)
    steps.append(f"wrote {out}: {model_name} {spec.weights_id} {precision}")
    package = open_package(out, Wanted(model_name, weights, Precision(precision), seed))
    steps.append(_compare(package, loaded))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.model.ir.build", description=__doc__)
    weights_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--precision", default="fp32", choices=IR_PRECISIONS)
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights")
    args = parser.parse_args(argv)
    try:
        for line in build(
            args.model,
            args.weights,
            args.out,
            precision=args.precision,
            seed=args.seed,
            local_dir=args.local_dir,
        ):
            print(line)
    except Exception as exc:  # one clear line for the build log
        print(f"model build: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
