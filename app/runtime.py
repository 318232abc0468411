"""The model runtime: the one owner of the model and of torch's threads.

It knows tensors, nothing of HTTP or batching policy. `infer` is called from exactly one thread
(the batcher's model worker), so torch's intra-op pool is never shared by two forward passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from app.weights import LoadedModel

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class RuntimeInfo:
    device: str
    dtype: str
    compiled: bool
    channels_last: bool
    num_threads: int


class ModelRuntime:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        num_threads: int,
        channels_last: bool = True,
    ) -> None:
        self.loaded = loaded
        configure_threads(num_threads)
        self._channels_last = channels_last
        model: nn.Module = loaded.model
        if channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._model = model
        self.info = RuntimeInfo(
            device="cpu",
            dtype="float32",
            compiled=False,
            channels_last=channels_last,
            num_threads=num_threads,
        )

    @property
    def num_classes(self) -> int:
        return len(self.loaded.labels)

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 -> (N, classes) float32 softmax probabilities, on the CPU."""
        with torch.inference_mode():
            if self._channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            logits = self._model(batch)
            return torch.softmax(logits.float(), dim=1).cpu()

    def warm_up(self, batch_sizes: Iterable[int], image_size: int) -> float:
        """Real forward passes at every batch size given, so the first requests do not pay for
        oneDNN's kernel selection and allocator growth. Returns the seconds spent."""
        started = time.perf_counter()
        for size in sorted(set(batch_sizes)):
            self.infer(torch.zeros(size, 3, image_size, image_size))
        return time.perf_counter() - started
