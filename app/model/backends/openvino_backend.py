"""The OpenVINO backend: the default on a CPU.

It takes an OpenVINO model with a dynamic batch dimension: the IR built with the image
(app/model/ir), or torchvision's module converted at start-up (app/model/backends/convert.py),
and compiles it for the CPU plugin once: one compiled model serves every batch size the batcher
produces. This module needs no torch. Its threads come
from SERVING_NUM_THREADS (INFERENCE_NUM_THREADS) with one stream and the LATENCY hint: the
batcher runs one batch at a time, so a second stream would only halve the threads of each
(measured in bench/ceiling.py and docs/PERFORMANCE.md, "Threads").

Precision is a compile hint: bf16 on CPUs with AMX or AVX512-BF16, f32 otherwise, or an int8
model quantized with NNCF (`app.model.backends.int8`: at build time, or at start-up). What the
plugin really runs is read back from the compiled model and reported, never assumed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from app.model.backends.base import RuntimeInfo
from app.model.options import Precision

log = logging.getLogger(__name__)

# OpenVINO's own names for what its CPU plugin computes in, and ours.
_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16"}
_DTYPE_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}

# A model transform between conversion and compilation (int8 quantization).
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


def read_model(xml: Any) -> Any:
    """An IR from disk (model.xml beside its model.bin) as an openvino.Model."""
    return import_openvino().Core().read_model(str(xml))


class OpenVINOBackend:
    def __init__(
        self,
        ov_model: Any,
        *,
        precision: Precision,
        num_threads: int,
        bf16_native: bool,
    ) -> None:
        """`ov_model`: an openvino.Model, already quantized when `precision` is int8."""
        ov = import_openvino()
        if precision is Precision.INT8:
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
