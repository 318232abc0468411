"""Faster CPU paths than the ones we ship, measured in process on this machine: what each
gives, at batch 1 and batch 8, with its accuracy against fp32 on real photographs.

    python -m bench.experiments.explore_paths --json bench/results/explore_paths.json

Paths: fp32 eager (the reference), bf16 eager (shipped), bf16 torch.compile (shipped, opt-in),
bf16 torch.compile mode="max-autotune", fp32 TorchScript frozen with oneDNN graph fusion, and
int8 (PT2E static quantization with the x86 inductor quantizer, compiled). A path that fails
on this torch/CPU is recorded with its error, not hidden.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.images.preprocess import Preprocessor
from app.model.backends.torch_backend import configure_threads
from app.model.cpu import available_cpus
from app.model.weights import load_model, resolve_weights
from bench.lib.images import sample_photos
from bench.lib.results import command_line, write_result
from bench.lib.timing import median_s

Forward = Callable[[torch.Tensor], torch.Tensor]


def timed(forward: Forward, batch: torch.Tensor, seconds: float) -> float:
    """Median seconds per call after two warm-up calls."""
    with torch.inference_mode():
        for _ in range(2):
            forward(batch)
        return median_s(lambda: forward(batch), seconds)[0]


def fp32_eager(model: nn.Module, example: torch.Tensor) -> Forward:
    return lambda x: model(x)


def bf16_eager(model: nn.Module, example: torch.Tensor) -> Forward:
    m = model.to(torch.bfloat16).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return lambda x: m(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()


def bf16_compiled(mode: str | None) -> Callable[[nn.Module, torch.Tensor], Forward]:
    def build(model: nn.Module, example: torch.Tensor) -> Forward:
        m = model.to(torch.bfloat16).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        compiled = torch.compile(m, mode=mode)

        def forward(x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = compiled(
                x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            )
            return out.float()

        return forward

    return build


def onednn_graph_fp32(model: nn.Module, example: torch.Tensor) -> Forward:
    torch.jit.enable_onednn_fusion(True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(model, example))
        for _ in range(2):  # the fusion pass runs on the first calls
            traced(example)
    return lambda x: traced(x)


def int8_pt2e(model: nn.Module, example: torch.Tensor) -> Forward:
    # PT2E quantization lives in torchao since torch 2.10 (torch.ao.quantization's copy is gone).
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A dynamic batch dimension, or the graph only accepts the example's batch size.
        batch = torch.export.Dim("batch", min=1, max=64)
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        observers = [n for n in dict(prepared.named_modules()) if "activation_post_process" in n]
        if not observers:  # otherwise "int8" would silently measure the fp32 graph
            raise RuntimeError(
                "the x86 inductor quantizer annotated no node of the exported graph "
                "(0 observers): nothing would be quantized"
            )
        with torch.no_grad():
            prepared(example)  # calibration on real photographs
        converted = convert_pt2e(prepared)
        move_exported_model_to_eval(converted)
        compiled = torch.compile(converted)
    return lambda x: compiled(x)


PATHS: dict[str, Callable[[nn.Module, torch.Tensor], Forward]] = {
    "fp32 eager": fp32_eager,
    "bf16 eager": bf16_eager,
    "bf16 compiled": bf16_compiled(None),
    "bf16 compiled max-autotune": bf16_compiled("max-autotune"),
    "fp32 TorchScript + oneDNN graph": onednn_graph_fp32,
    "int8 PT2E compiled": int8_pt2e,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    configure_threads(available_cpus())
    source = resolve_weights(args.model, "random", allow_download=False)
    pre = Preprocessor.from_transforms(source.meta_weights.transforms())
    photos = torch.stack([torch.from_numpy(pre(p)) for p in sample_photos()])
    batch8 = torch.cat([photos, photos])[:8]
    reference = load_model(source).model.eval()
    with torch.inference_mode():
        ref_logits = reference(photos)
    rows: list[dict[str, Any]] = []
    for name in args.paths.split(","):
        row: dict[str, Any] = {"path": name}
        try:
            started = time.perf_counter()
            forward = PATHS[name](load_model(source).model.eval(), batch8)
            with torch.inference_mode():
                logits = forward(photos)
            row["build_s"] = round(time.perf_counter() - started, 1)
            row["max_logit_diff_vs_fp32"] = round((logits - ref_logits).abs().max().item(), 4)
            row["top1_agrees"] = bool((logits.argmax(1) == ref_logits.argmax(1)).all().item())
            for size, batch in ((1, batch8[:1]), (8, batch8)):
                seconds = timed(forward, batch, args.seconds)
                row[f"b{size}_ms"] = round(seconds * 1000, 2)
                row[f"b{size}_img_s"] = round(size / seconds, 2)
        except Exception as exc:  # record, do not hide, what does not work here
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            traceback.print_exc()
        rows.append(row)
        print(json.dumps(row), flush=True)
    command = command_line("bench.experiments.explore_paths", argv)
    if args.json and args.json.is_file() and set(args.paths.split(",")) != set(PATHS):
        # A subset re-measured: keep the other paths' rows of the earlier run, in order.
        earlier = json.loads(args.json.read_text())
        fresh = {row["path"]: row for row in rows}
        rows = [fresh.pop(row["path"], row) for row in earlier["rows"]] + list(fresh.values())
        command = earlier["command"].split("; then ")[0] + f"; then {command}"
    report = {
        "command": command,
        "torch": torch.__version__,
        "threads": available_cpus(),
        "rows": rows,
    }
    if args.json:
        write_result(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
