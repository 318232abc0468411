"""The model runtime: the one owner of the model, its device and its engine's threads.

It knows tensors, nothing of HTTP or batching policy. `infer` is called from exactly one thread
(the batcher's model worker), so the engine's thread pool is never shared by two forward passes.

It chooses the engine once, at load (`SERVING_BACKEND`): OpenVINO on a CPU (app/backends/
openvino_backend.py), torch on a GPU or when asked for torch.compile (app/backends/
torch_backend.py), and torch when OpenVINO cannot load under `auto` (logged as a warning).
Precision is chosen with it: bf16 where the device has it natively, fp32 otherwise, or int8
on request (OpenVINO only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import torch
from torch import nn

from app.backends.base import InferenceBackend, RuntimeInfo
from app.cpu import cpu_has_native_bf16
from app.preprocess import Preprocessor
from app.runtime_options import BackendChoice, DeviceChoice, Precision
from app.weights import LoadedModel, WeightsSource

__all__ = ["ModelRuntime", "RuntimeInfo", "resolve_backend", "runs_on_gpu"]

log = logging.getLogger(__name__)


def wants_gpu(choice: DeviceChoice) -> bool:
    """Whether this choice means a CUDA device (without failing when there is none)."""
    return choice is DeviceChoice.CUDA or (
        choice is DeviceChoice.AUTO and torch.cuda.is_available()
    )


def resolve_backend(
    choice: BackendChoice,
    device: DeviceChoice,
    precision: Precision = Precision.AUTO,
    compile_model: bool = False,
) -> BackendChoice:
    """`auto` made concrete: OpenVINO for int8 and on a CPU; torch for torch.compile and on a
    GPU. An explicit choice stands (Settings refuses the combinations that cannot run)."""
    if choice is not BackendChoice.AUTO:
        return choice
    if precision is Precision.INT8:
        return BackendChoice.OPENVINO
    if compile_model or wants_gpu(device):
        return BackendChoice.TORCH
    return BackendChoice.OPENVINO


def runs_on_gpu(
    backend: BackendChoice, device: DeviceChoice, precision: Precision, compile_model: bool
) -> bool:
    resolved = resolve_backend(backend, device, precision, compile_model)
    return resolved is BackendChoice.TORCH and wants_gpu(device)


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


def crop_size(source: WeightsSource) -> int:
    """The square input side the weights' preprocessing produces (224 for ResNets)."""
    return Preprocessor.from_transforms(source.meta_weights.transforms()).crop_size


class ModelRuntime:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        num_threads: int,
        device: DeviceChoice = DeviceChoice.CPU,
        precision: Precision = Precision.FP32,
        compile_model: bool = False,
        backend: BackendChoice = BackendChoice.AUTO,
    ) -> None:
        self.source = loaded.source
        self.labels = loaded.labels
        resolved = resolve_backend(backend, device, precision, compile_model)
        on_cpu = resolved is BackendChoice.OPENVINO
        self.device = torch.device("cpu") if on_cpu else select_device(device)
        self.precision = select_precision(precision, self.device)
        engine: InferenceBackend | None = None
        if resolved is BackendChoice.OPENVINO:
            try:
                engine = self._openvino(loaded.model, num_threads)
            except Exception as exc:
                if backend is BackendChoice.OPENVINO or self.precision is Precision.INT8:
                    raise
                log.warning(
                    "OpenVINO could not load the model (%s: %s); falling back to torch",
                    type(exc).__name__,
                    exc,
                )
        if engine is None:
            from app.backends.torch_backend import TorchBackend

            engine = TorchBackend(
                loaded.model,
                device=self.device,
                precision=self.precision,
                num_threads=num_threads,
                compile_model=compile_model,
            )
        self._engine = engine
        self.info: RuntimeInfo = engine.info

    def _openvino(self, model: nn.Module, num_threads: int) -> InferenceBackend:
        from app.backends.openvino_backend import OpenVINOBackend

        quantize = None
        if self.precision is Precision.INT8:
            from app.backends.int8 import quantizer

            quantize = quantizer(self.source)
        return OpenVINOBackend(
            model,
            precision=self.precision,
            num_threads=num_threads,
            image_size=crop_size(self.source),
            bf16_native=cpu_has_native_bf16(),
            quantize=quantize,
        )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 -> (N, classes) float32 logits, on the model's device."""
        return self._engine.logits(batch)

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 -> (N, classes) float32 softmax probabilities, on the CPU."""
        with torch.inference_mode():
            return torch.softmax(self.logits(batch), dim=1).cpu()

    def warm_up(self, batch_sizes: Iterable[int], image_size: int) -> float:
        """Real forward passes at every batch size given, so the first requests do not pay for
        compilation, kernel selection or allocator growth. Returns the seconds spent."""
        started = time.perf_counter()
        for size in sorted(set(batch_sizes)):
            self.infer(torch.zeros(size, 3, image_size, image_size))
        return time.perf_counter() - started
