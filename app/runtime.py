"""The model runtime: the one owner of the model, its device and torch's threads.

It knows tensors, nothing of HTTP or batching policy. `infer` is called from exactly one thread
(the batcher's model worker), so torch's intra-op pool is never shared by two forward passes.

The CPU fast path, each step measured in bench/ and docs/PERFORMANCE.md:
- batch norm folded into the preceding convolution (exact in eval mode, fewer passes);
- channels_last memory layout (what oneDNN's convolutions want);
- bf16 weights and activations on CPUs with native bf16 (AMX or AVX512-BF16), chosen
  automatically (`SERVING_PRECISION=auto`) and overridable; softmax stays fp32;
- optionally `torch.compile` (`SERVING_COMPILE=true`), compiled and warmed for every batch
  size the batcher can produce before the service reports ready.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

with warnings.catch_warnings():
    # This torch module scripts helpers at import time, which torch 2.11 flags as deprecated.
    warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*is deprecated")
    from torch.fx.experimental.optimization import fuse as fuse_conv_bn

from app.runtime_options import DeviceChoice, Precision
from app.weights import LoadedModel

log = logging.getLogger(__name__)

_interop_configured = False


_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16}


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


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """AMX (Sapphire Rapids and later) or AVX512-BF16 (Cooper Lake, Zen 4 and later): bf16
    matrix work runs natively, about twice the fp32 rate or more. Without them bf16 is emulated
    and slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def wants_gpu(choice: DeviceChoice) -> bool:
    """Whether this choice means a CUDA device (without failing when there is none)."""
    return choice is DeviceChoice.CUDA or (
        choice is DeviceChoice.AUTO and torch.cuda.is_available()
    )


def select_device(choice: DeviceChoice) -> torch.device:
    if choice is DeviceChoice.CUDA:
        if not torch.cuda.is_available():
            raise RuntimeError("SERVING_DEVICE=cuda but torch sees no CUDA device")
        return torch.device("cuda")
    if choice is DeviceChoice.AUTO and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def select_precision(choice: Precision, device: torch.device) -> Precision:
    if choice is not Precision.AUTO:
        return choice
    if device.type == "cuda":
        return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP32
    return Precision.BF16 if cpu_has_native_bf16() else Precision.FP32


def _fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold eval-mode batch norm into the preceding convolution (exact up to float rounding;
    done in fp32 before any cast). Needs an fx-traceable model; others run unfolded."""
    try:
        fused: nn.Module = fuse_conv_bn(model)
    except Exception as exc:  # fx cannot trace every architecture
        log.info("batch norm not folded (%s: %s)", type(exc).__name__, exc)
        return model
    return fused


@dataclass(frozen=True)
class RuntimeInfo:
    device: str
    device_name: str
    dtype: str
    compiled: bool
    channels_last: bool
    num_threads: int


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return "cpu"


class ModelRuntime:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        num_threads: int,
        device: DeviceChoice = DeviceChoice.CPU,
        precision: Precision = Precision.FP32,
        compile_model: bool = False,
    ) -> None:
        self.loaded = loaded
        configure_threads(num_threads)
        self.device = select_device(device)
        self.precision = select_precision(precision, self.device)
        self.dtype = _DTYPES[self.precision]
        model: nn.Module = loaded.model.eval()
        if self.device.type == "cpu":
            model = _fold_batch_norm(model)
        model = model.to(device=self.device, dtype=self.dtype)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._compiled = compile_model
        if compile_model:
            # Dynamic batch dimension: one graph serves every batch size (size 1 is
            # specialised by dynamo, so two compilations in all), instead of one per size.
            model = torch.compile(model, dynamic=True)  # type: ignore[assignment]
        self._model = model
        self.info = RuntimeInfo(
            device=self.device.type,
            device_name=_device_name(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            compiled=compile_model,
            channels_last=True,
            num_threads=num_threads,
        )

    @property
    def num_classes(self) -> int:
        return len(self.loaded.labels)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 -> (N, classes) float32 logits, on the model's device."""
        with torch.inference_mode():
            x = batch.to(device=self.device, dtype=self.dtype, non_blocking=True)
            x = x.contiguous(memory_format=torch.channels_last)
            out: torch.Tensor = self._model(x)
            return out.float()

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 -> (N, classes) float32 softmax probabilities, on the CPU."""
        with torch.inference_mode():
            return torch.softmax(self.logits(batch), dim=1).cpu()

    def warm_up(self, batch_sizes: Iterable[int], image_size: int) -> float:
        """Real forward passes at every batch size given, so the first requests do not pay for
        compilation, oneDNN's kernel selection or allocator growth. Returns the seconds spent."""
        started = time.perf_counter()
        for size in sorted(set(batch_sizes)):
            self.infer(torch.zeros(size, 3, image_size, image_size))
        return time.perf_counter() - started
