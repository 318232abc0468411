"""What every backend offers the runtime: logits for a batch, and a description of itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


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


class InferenceBackend(Protocol):
    """One engine holding one model. `logits` is called from one thread at a time (the
    batcher's model thread): an engine need not be thread-safe."""

    info: RuntimeInfo

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 on the CPU -> (N, classes) float32 logits (any device)."""
        ...
