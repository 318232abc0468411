"""What the service knows of its model before loading it: the same few facts whether they
come from torchvision's metadata (weights converted or run in process) or from the manifest
written when the image was built (app/model/ir). Nothing here needs torch or OpenVINO."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from app.images.preprocess import Preprocessor

# SERVING_MODEL_WEIGHTS' grammar, shared by torchvision's resolution (app/model/weights.py) and
# the build-time model's check (app/model/ir).
RANDOM = "random"
STATE_DICT_SUFFIXES = (".pth", ".pt")


def looks_like_path(spec: str) -> bool:
    """Whether SERVING_MODEL_WEIGHTS names a state-dict file rather than weights."""
    return os.sep in spec or spec.endswith(STATE_DICT_SUFFIXES) or spec.startswith(".")


class ModelSource(StrEnum):
    """How the running model came to be, as /ready, /model and `model_info` report it."""

    IR = "ir"  # the OpenVINO IR compiled when the image was built (SERVING_MODEL_DIR)
    CONVERTED = "converted"  # torchvision's module converted to OpenVINO at start-up
    TORCH = "torch"  # torchvision's module run by torch itself (GPU, torch.compile, fallback)


@dataclass(frozen=True)
class ModelSpec:
    model_name: str
    weights_id: str  # ResNet50_Weights.IMAGENET1K_V2, file:<name>.pth or random
    weights_source: str  # file, cache, download or random (where the build found them, for IR)
    random_weights: bool
    labels: tuple[str, ...]
    preprocessor: Preprocessor
    from_ir: bool
