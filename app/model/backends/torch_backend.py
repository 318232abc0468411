"""The torch backend: the GPU path, and the CPU fallback.

On the CPU, each step measured in bench/ and docs/PERFORMANCE.md:
- batch norm folded into the preceding convolution (exact in eval mode, fewer passes);
- channels_last memory layout (what oneDNN's convolutions want);
- bf16 weights and activations on CPUs with native bf16 (AMX or AVX512-BF16); softmax stays
  fp32;
- optionally `torch.compile` (`SERVING_COMPILE=true`), compiled and warmed for every batch
  size the batcher can produce before the service reports ready.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

with warnings.catch_warnings():
    # This torch module scripts helpers at import time, which torch 2.11 flags as deprecated.
    warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*is deprecated")
    from torch.fx.experimental.optimization import fuse as fuse_conv_bn

from app.model.backends.base import RuntimeInfo
from app.model.options import Precision

log = logging.getLogger(__name__)

_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16}

_interop_configured = False


def configure_threads(num_threads: int) -> None:
    """Intra-op threads for the forward pass; one inter-op thread (we run one op graph at a
    time). torch allows setting inter-op threads only once per process, hence the guard."""
    global _interop_configured
    torch.set_num_threads(num_threads)
    if not _interop_configured:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already started by an earlier parallel op: harmless
            log.debug("inter-op thread count already fixed")
        _interop_configured = True


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold eval-mode batch norm into the preceding convolution (exact up to float rounding;
    done in fp32 before any cast). Needs an fx-traceable model; others run unfolded."""
    try:
        fused: nn.Module = fuse_conv_bn(model)
    except Exception as exc:  # fx cannot trace every architecture
        log.info("batch norm not folded (%s: %s)", type(exc).__name__, exc)
        return model
    return fused


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return "cpu"


class TorchBackend:
    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        precision: Precision,
        num_threads: int,
        compile_model: bool = False,
    ) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"the torch backend runs fp32 or bf16, not {precision}")
        configure_threads(num_threads)
        self.device = device
        self.dtype = _DTYPES[precision]
        model = model.eval()
        if device.type == "cpu":
            model = fold_batch_norm(model)
        model = model.to(device=device, dtype=self.dtype)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if compile_model:
            # Dynamic batch dimension: one graph serves every batch size (size 1 is
            # specialised by dynamo, so two compilations in all), instead of one per size.
            model = torch.compile(model, dynamic=True)  # type: ignore[assignment]
        self._model = model
        self.info = RuntimeInfo(
            backend="torch",
            device=device.type,
            device_name=_device_name(device),
            dtype=str(self.dtype).removeprefix("torch."),
            compiled=compile_model,
            channels_last=True,
            num_threads=num_threads,
        )

    def logits(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device=self.device, dtype=self.dtype, non_blocking=True)
            x = x.contiguous(memory_format=torch.channels_last)
            out: torch.Tensor = self._model(x)
            return out.float().cpu().numpy()
