"""The accuracy guard shared by every backend and precision: torchvision's own fp32 model is
the reference; a path keeps its top-1 class and at least 4 of its top 5 on every photograph."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from app.images.preprocess import Preprocessor
from app.model.runtime import ModelRuntime
from app.model.weights import load_model, resolve_weights
from helpers.images import PHOTOS, photo

Array = npt.NDArray[np.float32]


def photos_batch(model_name: str) -> Array:
    """Every test photograph, preprocessed as the service does."""
    source = resolve_weights(model_name, "random", allow_download=False)
    pre = Preprocessor.from_transforms(source.meta_weights.transforms())
    return np.stack([pre(photo(name)) for name in sorted(PHOTOS)])


def runtime(model_name: str, **kwargs: object) -> ModelRuntime:
    """A runtime with random weights from seed 0 and 2 threads."""
    source = resolve_weights(model_name, "random", allow_download=False)
    return ModelRuntime(load_model(source, seed=0), num_threads=2, **kwargs)  # type: ignore[arg-type]


def reference_logits(model_name: str, x: Array) -> Array:
    """torchvision's own model in fp32, untouched (same seed): what every path is judged by."""
    plain = load_model(resolve_weights(model_name, "random", allow_download=False), seed=0).model
    with torch.inference_mode():
        out: Array = plain(torch.from_numpy(x)).numpy()
    return out


def top5(row: Array) -> list[int]:
    return [int(i) for i in np.argsort(-row, kind="stable")[:5]]


def assert_keeps_top1_and_four_of_top5(reference: Array, logits: Array) -> None:
    for row in range(reference.shape[0]):
        top_ref = top5(reference[row])
        top = top5(logits[row])
        assert top_ref[0] == top[0], f"top-1 changed for photo {row}"
        assert len(set(top_ref) & set(top)) >= 4, f"top-5 drifted for photo {row}"
