"""A small OipModel for the protocol tests: numpy and Pillow only, deterministic scores.

Images are decoded with Pillow, resized to S x S and scaled to [0, 1] (CHW): `preprocess` is
public so a test can send the same pixels as an FP32 tensor and expect the same scores. Scores
are the softmax of a fixed random linear map of the pixels. Switches make it refuse (not ready,
overloaded) or take its time (honouring the deadline as the real pipeline does), and it records
what it was asked.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from app.cache.policy import CachePolicy
from app.errors import (
    DeadlineExceededError,
    EmptyImageError,
    InvalidImageError,
    NotReadyError,
    OverloadedError,
)

SIZE = 16
CLASSES = 10
LABELS = tuple(f"class {i}" for i in range(CLASSES))


def preprocess(data: bytes, size: int = SIZE) -> npt.NDArray[np.float32]:
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(rgb, dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()


def image_file(seed: int, fmt: str = "PNG", size: int = 32) -> bytes:
    """A small image with random pixels (different seeds: different scores)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


class FakeModel:
    name = "fake"
    versions = ("1", "2")
    platform = "numpy"
    input_size = SIZE
    num_classes = CLASSES
    labels = LABELS

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.weights = rng.normal(0.0, 1.0, (CLASSES, 3 * SIZE * SIZE)).astype(np.float32)
        self.ready = True
        self.overloaded = False
        self.delay_s = 0.0
        # Set: calls wait for it to be set before scoring (a call held in flight on purpose).
        self.gate: threading.Event | None = None
        self.deadlines: list[float] = []  # (deadline - time.monotonic()) at each admission
        self.admitted: list[int] = []
        self.cache_policies: list[CachePolicy] = []  # what each image call's transport asked
        self._lock = threading.Lock()
        self.in_flight = 0

    def is_ready(self) -> bool:
        return self.ready

    def admit(self, deadline: float, images: int) -> None:
        """Admission, first thing in both scoring calls, as the real model does it."""
        if not self.ready:
            raise NotReadyError("the model is loading", headers={"Retry-After": "5"})
        if self.overloaded:
            raise OverloadedError("too many requests queued", headers={"Retry-After": "1"})
        if deadline <= time.monotonic():
            raise DeadlineExceededError("the deadline passed before admission")
        self.deadlines.append(deadline - time.monotonic())
        self.admitted.append(images)

    def scores(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        logits = batch.reshape(batch.shape[0], -1).astype(np.float64) @ self.weights.T
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: npt.NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(
            np.float32
        )
        return probabilities

    async def _work(self, deadline: float) -> None:
        with self._lock:
            self.in_flight += 1
        try:
            if self.gate is not None:
                await asyncio.to_thread(self.gate.wait)
            if self.delay_s > 0:
                await asyncio.sleep(max(0.0, min(self.delay_s, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                raise DeadlineExceededError("the deadline passed while waiting for the model")
        finally:
            with self._lock:
                self.in_flight -= 1

    async def scores_from_images(
        self, images: Sequence[bytes], deadline: float, cache: CachePolicy = CachePolicy.USE
    ) -> npt.NDArray[np.float32]:
        self.cache_policies.append(cache)
        self.admit(deadline, len(images))
        batch = []
        for data in images:
            if not data:
                raise EmptyImageError("the image is empty")
            try:
                batch.append(preprocess(data))
            except (UnidentifiedImageError, OSError):
                raise InvalidImageError("the bytes are not an image this server decodes") from None
        await self._work(deadline)
        return self.scores(np.stack(batch))

    async def scores_from_tensor(
        self, batch: npt.NDArray[np.float32], deadline: float
    ) -> npt.NDArray[np.float32]:
        self.admit(deadline, len(batch))
        await self._work(deadline)
        return self.scores(batch)
