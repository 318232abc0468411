"""What the Open Inference Protocol layer needs from the served model, and nothing more.

The protocol code (REST router, gRPC servicer, tensor codec) talks only to this interface; the
app implements it over the shared request pipeline, so /predict and the protocol share
admission, decoding, batching and metrics. Tests implement it with numpy alone.

Admission is part of the two scoring calls rather than a step of its own: the protocol knows
the number of images only once the request is parsed, and whatever admission holds must be
given back when the call ends, which the implementation does best around its own work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.cache.policy import CachePolicy

Scores = npt.NDArray[np.float32]
"""Softmax probabilities, shape [N, num_classes], one row per image in request order."""


class OipModel(Protocol):
    """One served model as the protocol sees it.

    Deadlines are absolute `time.monotonic()` values. Every error is an `app.errors.ServingError`
    subclass (its `status_code`, `code`, `message` and `headers` are what the protocol reports);
    anything else is a server fault.
    """

    @property
    def name(self) -> str:
        """The model name clients put in the URL or `model_name` (SERVING_MODEL_NAME)."""
        ...

    @property
    def versions(self) -> Sequence[str]:
        """The versions served; requests may name one of them or none. Never empty."""
        ...

    @property
    def platform(self) -> str:
        """The `platform` of the model metadata, e.g. `pytorch_torchvision`."""
        ...

    @property
    def input_size(self) -> int:
        """S of the preprocessed FP32 input [N, 3, S, S] (224 for the ResNets)."""
        ...

    @property
    def num_classes(self) -> int:
        """Width of the score output (1000 for ImageNet)."""
        ...

    @property
    def labels(self) -> Sequence[str]:
        """Class names, `num_classes` of them, in score order."""
        ...

    def is_ready(self) -> bool:
        """Loaded, warmed, and not draining: what /ready says."""
        ...

    async def scores_from_images(
        self, images: Sequence[bytes], deadline: float, cache: CachePolicy = CachePolicy.USE
    ) -> Scores:
        """Admit `len(images)` images, then decode, preprocess and classify the encoded files
        (JPEG, PNG, ...) exactly as /predict does, with its limits and errors. Admission comes
        first and costs nothing when it refuses: `NotReadyError` / `OverloadedError` (503 with
        `Retry-After`). Then `InvalidImageError`, `EmptyImageError`,
        `UnsupportedImageFormatError`, `ImageTooLargeError`, `MemoryBusyError`,
        `DeadlineExceededError`, ...: the first failing image fails the call. Whatever the call
        held against capacity is given back when it returns or raises. Each image goes through
        the prediction cache as `cache` allows (app/cache/policy.py)."""
        ...

    async def scores_from_tensor(self, batch: npt.NDArray[np.float32], deadline: float) -> Scores:
        """Admit `len(batch)` images as above, then classify the already preprocessed batch
        [N, 3, S, S] (normalized the way the model expects: the protocol checks the shape and
        that every value is finite, not their range)."""
        ...
