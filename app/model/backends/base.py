"""What every backend offers the runtime: logits for a batch, and a description of itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class RuntimeInfo:
    """What runs, as /model, /ready and the `model_info` metric report it."""

    backend: str  # "openvino" or "torch"
    device: str
    device_name: str
    dtype: str  # what the matrix work runs in: float32, bfloat16, int8
    compiled: bool  # torch.compile (torch backend only)
    channels_last: bool
    num_threads: int
    # ir, converted or torch (app.model.spec.ModelSource): filled in by the runtime.
    model_source: str = ""


class InferenceBackend(Protocol):
    """One engine holding one model. `logits` is called from one thread at a time (the
    batcher's model thread): an engine need not be thread-safe."""

    info: RuntimeInfo

    def logits(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(N, 3, H, W) float32 -> (N, classes) float32 logits, numpy arrays in host memory:
        the engine's own tensors stay inside the backend."""
        ...
