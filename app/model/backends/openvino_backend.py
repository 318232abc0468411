"""The OpenVINO backend: the default on a CPU.

The torchvision module is converted in process (`openvino.convert_model`, about a second for
ResNet-50; no files, no C++ compiler) with a dynamic batch dimension, then compiled for the CPU
plugin once: one compiled model serves every batch size the batcher produces. Its threads come
from SERVING_NUM_THREADS (INFERENCE_NUM_THREADS) with one stream and the LATENCY hint: the
batcher runs one batch at a time, so a second stream would only halve the threads of each
(measured in bench/ceiling.py and docs/PERFORMANCE.md, "Threads").

Precision is a compile hint: bf16 on CPUs with AMX or AVX512-BF16, f32 otherwise, or an int8
model quantized with NNCF (`app.model.backends.int8`). What the plugin really runs is read back from
the compiled model and reported, never assumed.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from app.model.backends.base import RuntimeInfo
from app.model.options import Precision

log = logging.getLogger(__name__)

# OpenVINO's own names for what its CPU plugin computes in, and ours.
_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16"}
_DTYPE_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}

# Optional model transform between conversion and compilation (int8 quantization).
Transform = Callable[[Any], Any]


def block_telemetry() -> None:
    """OpenVINO's converter and NNCF send usage statistics to a third party unless the user
    opted out in their home directory; a server must not phone home. Both fall back to a no-op
    stub when `openvino_telemetry` cannot be imported: make it so, before either is imported."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def import_openvino() -> Any:
    """Import openvino without its usage telemetry. Raises ImportError when not installed."""
    block_telemetry()
    import openvino

    return openvino


_export_thread: ThreadPoolExecutor | None = None
_export_thread_lock = threading.Lock()


def _exporter() -> ThreadPoolExecutor:
    """One long-lived thread for every torch.export in the process. torch 2.11 (CUDA build, no
    GPU) ties a device guard to the thread of the first export; exporting again after that
    thread had ended crashed the process (a segfault: a second app in one test process, a new
    model thread). Exports on this thread only, which lives as long as the process."""
    global _export_thread
    with _export_thread_lock:
        if _export_thread is None:
            _export_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        return _export_thread


def _export(model: nn.Module, image_size: int) -> Any:
    ov = import_openvino()
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = torch.zeros(2, 3, image_size, image_size)
    with warnings.catch_warnings():
        # torch's own pytree internals, on every export in torch 2.11: not ours to act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        exported = torch.export.export(
            model.eval(), (example,), dynamic_shapes=({0: batch},), strict=False
        )
        return ov.convert_model(exported)


def convert(model: nn.Module, image_size: int) -> Any:
    """torchvision module -> ov.Model with a dynamic batch dimension and a fixed image size.

    Through `torch.export` (a few seconds for ResNet-50 on a loaded 2-CPU machine, where the
    converter's default TorchScript tracing took 15-27 s and is deprecated in torch 2.11)."""
    ov_model = _exporter().submit(_export, model, image_size).result()
    ov_model.reshape([-1, 3, image_size, image_size])
    return ov_model


class OpenVINOBackend:
    def __init__(
        self,
        model: nn.Module,
        *,
        precision: Precision,
        num_threads: int,
        image_size: int,
        bf16_native: bool,
        quantize: Transform | None = None,
    ) -> None:
        ov = import_openvino()
        ov_model = convert(model, image_size)
        if precision is Precision.INT8:
            if quantize is None:
                raise ValueError("int8 needs a quantization step")
            ov_model = quantize(ov_model)
            # The ops NNCF leaves in floating point run in bf16 where that is native.
            hint = "bf16" if bf16_native else "f32"
        elif precision in _HINTS:
            hint = _HINTS[precision]
        else:
            raise ValueError(f"no OpenVINO precision for {precision}")
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(num_threads),
            "INFERENCE_PRECISION_HINT": hint,
            # Threads float over the CPUs: the event loop and the decoders share them.
            "ENABLE_CPU_PINNING": "NO",
        }
        core = ov.Core()
        self._compiled = core.compile_model(ov_model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        runs_in = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        dtype = "int8" if precision is Precision.INT8 else _DTYPE_NAMES.get(runs_in, runs_in)
        threads = int(self._compiled.get_property("INFERENCE_NUM_THREADS")) or num_threads
        self.info = RuntimeInfo(
            backend="openvino",
            device="cpu",
            device_name=f"cpu (OpenVINO {ov.get_version().split('-')[0]})",
            dtype=dtype,
            compiled=False,
            channels_last=False,
            num_threads=threads,
        )
        log.info(
            "openvino model compiled",
            extra={"precision_hint": hint, "runs_in": runs_in, "threads": threads},
        )

    def logits(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        self._request.infer({0: x}, share_inputs=True)
        # A copy: the request's output buffer is reused by the next inference.
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)
