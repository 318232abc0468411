"""The served model as the Open Inference Protocol sees it (`OipModel`), over the same core as
/predict: the same admission door (one ticket for all the images of a call), the same decoder
and memory budget, the same batch queue (protocol and /predict images share batches), the same
prediction metrics. Nothing here is protocol-specific beyond the shapes it returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from app.admission import Ticket
from app.errors import ServingError
from app.pipeline import RequestPipeline
from app.service import Service

from .model import Scores

# The model's version as the protocol names it: one version is served at a time.
VERSION = "1"


class ServedModel:
    def __init__(self, service: Service) -> None:
        self._service = service

    @property
    def name(self) -> str:
        return self._service.settings.model_name

    @property
    def versions(self) -> Sequence[str]:
        return (VERSION,)

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
        categories: list[str] = self._service.host.resolve().meta_weights.meta["categories"]
        return tuple(categories)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def is_ready(self) -> bool:
        return self._service.host.status().ready

    async def scores_from_images(self, images: Sequence[bytes], deadline: float) -> Scores:
        pipeline = self._service.pipeline

        async def one(data: bytes, ticket: Ticket) -> torch.Tensor:
            item = await pipeline.decode(data, ticket)
            return await _scored(pipeline, item.tensor, ticket)

        return await self._all(len(images), deadline, lambda i, t: one(images[i], t))

    async def scores_from_tensor(self, batch: npt.NDArray[np.float32], deadline: float) -> Scores:
        pipeline = self._service.pipeline
        rows = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return await self._all(
            len(rows), deadline, lambda i, t: _scored(pipeline, rows[i].clone(), t)
        )

    async def _all(
        self,
        count: int,
        deadline: float,
        run: Callable[[int, Ticket], Coroutine[Any, Any, torch.Tensor]],
    ) -> Scores:
        """Admit `count` images at once, run each, give back what was not used. The first
        image that fails fails the call, and the others are cancelled (a cancelled image still
        in the queue never reaches the model)."""
        ticket = self._service.admission.admit(deadline, images=count)
        try:
            async with asyncio.TaskGroup() as group:
                tasks: list[asyncio.Task[torch.Tensor]] = [
                    group.create_task(run(i, ticket)) for i in range(count)
                ]
        except BaseExceptionGroup as failed:
            raise _first_serving_error(failed) from None
        finally:
            ticket.release()
        return np.stack([task.result().numpy() for task in tasks]).astype(np.float32, copy=False)


async def _scored(pipeline: RequestPipeline, tensor: torch.Tensor, ticket: Ticket) -> torch.Tensor:
    scored = await pipeline.score(tensor, ticket)
    pipeline.count(scored.probabilities)
    return scored.probabilities


def _first_serving_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report: the first ServingError (what the client did wrong, or overload),
    else the first exception as it is (a server fault)."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    for exc in flat:
        if isinstance(exc, ServingError):
            return exc
    return flat[0]
