"""The model runtime: the one owner of the model, its device and its engine's threads.

It knows arrays, nothing of HTTP or batching policy. `infer` is called from exactly one thread
(the batcher's model worker), so the engine's thread pool is never shared by two forward passes.

It chooses the engine once, at load (`SERVING_BACKEND`): OpenVINO on a CPU (app/model/backends/
openvino_backend.py), torch on a GPU or when asked for torch.compile (app/model/backends/
torch_backend.py), and torch when OpenVINO cannot load under `auto` (logged as a warning).
Precision is chosen with it: bf16 where the device has it natively, fp32 otherwise, or int8
on request (OpenVINO only).

The model comes either built (the OpenVINO IR baked into the image, app/model/ir: no torch is
imported at all) or as torchvision's module (converted to OpenVINO here, or run by torch).
torch is imported only on the second path, or to ask whether there is a GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from app.model.backends.base import InferenceBackend, RuntimeInfo
from app.model.cpu import cpu_has_native_bf16, default_torch_threads
from app.model.ir.package import ModelPackage
from app.model.options import BackendChoice, DeviceChoice, Precision
from app.model.spec import ModelSource, ModelSpec

if TYPE_CHECKING:
    from app.model.weights import LoadedModel

__all__ = ["ModelRuntime", "RuntimeInfo", "RuntimePlan", "plan_runtime", "resolve_backend"]

log = logging.getLogger(__name__)


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise softmax in float32, as torch.softmax computes it: the row's maximum taken off
    first, so large logits cannot overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps: npt.NDArray[np.float32] = np.exp(shifted, dtype=np.float32)
    probabilities: npt.NDArray[np.float32] = exps / exps.sum(axis=1, keepdims=True)
    return probabilities


def cuda_available() -> bool:
    """Whether torch sees a CUDA device; False where torch is not installed (the CPU image)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def wants_gpu(choice: DeviceChoice) -> bool:
    """Whether this choice means a CUDA device (without failing when there is none)."""
    return choice is DeviceChoice.CUDA or (choice is DeviceChoice.AUTO and cuda_available())


def resolve_backend(
    choice: BackendChoice,
    device: DeviceChoice,
    precision: Precision = Precision.AUTO,
    compile_model: bool = False,
    built: bool = False,
) -> BackendChoice:
    """`auto` made concrete: OpenVINO for int8, on a CPU and for a build-time IR; torch for
    torch.compile and on a GPU. An explicit choice stands (Settings refuses the combinations
    that cannot run)."""
    if choice is not BackendChoice.AUTO:
        return choice
    if built or precision is Precision.INT8:
        return BackendChoice.OPENVINO
    if compile_model or wants_gpu(device):
        return BackendChoice.TORCH
    return BackendChoice.OPENVINO


def select_device(choice: DeviceChoice) -> str:
    """`cpu` or `cuda`."""
    if choice is DeviceChoice.CUDA:
        if not cuda_available():
            raise RuntimeError("SERVING_DEVICE=cuda but torch sees no CUDA device")
        return "cuda"
    if choice is DeviceChoice.AUTO and cuda_available():
        return "cuda"
    return "cpu"


def select_precision(choice: Precision, device: str) -> Precision:
    if choice is not Precision.AUTO:
        return choice
    if device == "cuda":
        import torch

        return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP32
    return Precision.BF16 if cpu_has_native_bf16() else Precision.FP32


@dataclass(frozen=True)
class RuntimePlan:
    """Every start-up choice about where and how the model runs, made once (`plan_runtime`):
    the engine, the device, the precision and the engine's threads."""

    backend: BackendChoice  # concrete: openvino or torch
    device: str  # cpu or cuda
    precision: Precision  # concrete: fp32, bf16 or int8
    num_threads: int
    compile_model: bool = False
    # OpenVINO failing to load under `auto` falls back to torch (logged); asked for, it fails.
    fallback_to_torch: bool = True


def plan_runtime(
    *,
    backend: BackendChoice = BackendChoice.AUTO,
    device: DeviceChoice = DeviceChoice.CPU,
    precision: Precision = Precision.FP32,
    compile_model: bool = False,
    num_threads: int = 0,
    built: bool = False,
) -> RuntimePlan:
    """`SERVING_BACKEND`, `SERVING_DEVICE`, `SERVING_PRECISION`, `SERVING_NUM_THREADS` made
    concrete. Threads 0 = the default for the device (`default_torch_threads`). `built`: the
    model is a build-time IR, which only OpenVINO on the CPU runs (nothing to fall back to)."""
    resolved = resolve_backend(backend, device, precision, compile_model, built)
    on_cpu = resolved is BackendChoice.OPENVINO
    chosen_device = "cpu" if on_cpu else select_device(device)
    return RuntimePlan(
        backend=resolved,
        device=chosen_device,
        precision=select_precision(precision, chosen_device),
        num_threads=num_threads or default_torch_threads(device_type=chosen_device),
        compile_model=compile_model,
        fallback_to_torch=backend is BackendChoice.AUTO and not built,
    )


class ModelRuntime:
    def __init__(
        self,
        loaded: LoadedModel | ModelPackage,
        *,
        num_threads: int,
        device: DeviceChoice = DeviceChoice.CPU,
        precision: Precision = Precision.FP32,
        compile_model: bool = False,
        backend: BackendChoice = BackendChoice.AUTO,
        plan: RuntimePlan | None = None,
    ) -> None:
        """`loaded`: torchvision's module with its weights, or the build-time IR. `plan` when
        the caller made the choices already (the model host); otherwise they are made here from
        the same arguments (benchmarks, tests)."""
        built = isinstance(loaded, ModelPackage)
        plan = plan or plan_runtime(
            backend=backend,
            device=device,
            precision=precision,
            compile_model=compile_model,
            num_threads=num_threads,
            built=built,
        )
        self.plan = plan
        self.spec: ModelSpec = loaded.spec
        self.labels = list(self.spec.labels)
        self.device = plan.device
        self.precision = plan.precision
        engine: InferenceBackend | None = None
        source = ModelSource.TORCH
        if plan.backend is BackendChoice.OPENVINO:
            try:
                engine = self._openvino(loaded, plan.num_threads)
                source = ModelSource.IR if built else ModelSource.CONVERTED
            except Exception as exc:
                if built or not plan.fallback_to_torch or self.precision is Precision.INT8:
                    raise
                log.warning(
                    "OpenVINO could not load the model (%s: %s); falling back to torch",
                    type(exc).__name__,
                    exc,
                )
        if engine is None:
            if isinstance(loaded, ModelPackage):
                raise ValueError("a build-time IR runs on OpenVINO only, not on torch")
            engine = self._torch(loaded, plan)
        self._engine = engine
        self.info: RuntimeInfo = dataclasses.replace(engine.info, model_source=source.value)

    def _openvino(self, loaded: LoadedModel | ModelPackage, num_threads: int) -> InferenceBackend:
        from app.model.backends.openvino_backend import OpenVINOBackend, read_model

        ov_model: Any
        if isinstance(loaded, ModelPackage):
            # Quantized at build time when int8 (open_package checked the two agree).
            ov_model = read_model(loaded.xml)
        else:
            from app.model.backends.convert import convert

            quantize = None
            if self.precision is Precision.INT8:
                from app.model.backends.int8 import quantizer

                # Before converting: fails at once when NNCF or its photographs are missing.
                quantize = quantizer(self.spec.preprocessor)
            ov_model = convert(loaded.model, self.spec.preprocessor.crop_size)
            if quantize is not None:
                ov_model = quantize(ov_model)
        return OpenVINOBackend(
            ov_model,
            precision=self.precision,
            num_threads=num_threads,
            bf16_native=cpu_has_native_bf16(),
        )

    @staticmethod
    def _torch(loaded: LoadedModel, plan: RuntimePlan) -> InferenceBackend:
        import torch

        from app.model.backends.torch_backend import TorchBackend

        return TorchBackend(
            loaded.model,
            device=torch.device(plan.device),
            precision=plan.precision,
            num_threads=plan.num_threads,
            compile_model=plan.compile_model,
        )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def logits(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(N, 3, H, W) float32 -> (N, classes) float32 logits."""
        return self._engine.logits(batch)

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(N, 3, H, W) float32 -> (N, classes) float32 softmax probabilities."""
        return softmax(self.logits(batch))

    def warm_up(self, batch_sizes: Iterable[int], image_size: int) -> float:
        """Real forward passes at every batch size given, so the first requests do not pay for
        compilation, kernel selection or allocator growth. Returns the seconds spent."""
        started = time.perf_counter()
        for size in sorted(set(batch_sizes)):
            scores = self.infer(np.zeros((size, 3, image_size, image_size), dtype=np.float32))
            if scores.shape != (size, self.num_classes):
                # A model and labels that disagree would name the wrong classes on every answer.
                raise ValueError(
                    f"the model gives {scores.shape[1:]} scores per image for "
                    f"{self.num_classes} labels"
                )
        return time.perf_counter() - started
