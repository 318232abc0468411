"""The served model as the Open Inference Protocol sees it (`OipModel`), over the same core as
/predict: the same admission door (one ticket for all the images of a call), the same decoder
and memory budget, the same batch queue (protocol and /predict images share batches), the same
prediction metrics. Nothing here is protocol-specific beyond the shapes it returns."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import numpy.typing as npt

from app.cache.policy import CachePolicy
from app.oip.model import Scores
from app.serving.batcher import Array
from app.serving.pipeline import ImageSource
from app.serving.service import Service


class ServedModel:
    def __init__(self, service: Service) -> None:
        self._service = service

    @property
    def name(self) -> str:
        settings = self._service.settings
        return settings.oip_model_name or settings.model_name

    @property
    def versions(self) -> Sequence[str]:
        # One version per process: SERVING_MODEL_VERSION (an A/B test runs one per version).
        return (self._service.settings.model_version,)

    @property
    def platform(self) -> str:
        return "pytorch_torchvision"

    @property
    def input_size(self) -> int:
        # From the weights' metadata, not the loaded model: metadata requests are answered
        # while the model still loads.
        return self._service.host.preprocessor().crop_size

    @cached_property
    def labels(self) -> Sequence[str]:
        return self._service.host.resolve().labels

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def is_ready(self) -> bool:
        return self._service.host.status().ready

    async def scores_from_images(
        self, images: Sequence[bytes], deadline: float, cache: CachePolicy = CachePolicy.USE
    ) -> Scores:
        return await self._scores(deadline, [_given(data) for data in images], cache)

    async def scores_from_tensor(self, batch: npt.NDArray[np.float32], deadline: float) -> Scores:
        rows = np.array(batch, dtype=np.float32, order="C")  # a copy: the request's buffer may go
        return await self._scores(deadline, [_given(row) for row in rows])

    async def _scores(
        self,
        deadline: float,
        images: Sequence[ImageSource],
        cache: CachePolicy = CachePolicy.USE,
    ) -> Scores:
        """All the images of one call on one admission ticket; the first that fails fails
        the call (RequestPipeline.score_many)."""
        ticket = self._service.admission.admit(deadline, images=len(images))
        try:
            scored = await self._service.pipeline.score_many(
                ticket, images, fail_fast=True, cache=cache
            )
        finally:
            ticket.release()
        return np.stack([item.probabilities for item in scored]).astype(np.float32, copy=False)


def _given(image: bytes | Array) -> ImageSource:
    async def source() -> bytes | Array:
        return image

    return source
