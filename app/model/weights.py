"""Finding and loading model weights, in one documented order.

`SERVING_MODEL_WEIGHTS` is one of:

1. a path to a state-dict file (`.pth`/`.pt`): loaded from there, nothing else is tried;
2. a torchvision weights name (`DEFAULT`, `IMAGENET1K_V1`, ...): taken from torch's hub cache
   (`$TORCH_HOME/hub/checkpoints`, the file the Docker image bakes in) if present, else
   downloaded by torchvision when `SERVING_ALLOW_WEIGHTS_DOWNLOAD` is true;
3. `random`: random initialisation from a fixed seed, for tests and smoke runs only, reported
   as such by /ready and the `model_info` metric.

`resolve_weights` decides which, cheaply and before the server starts, so a process with no
usable weights exits at once with one line saying what to set. `load_model` does the heavy part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

from app.images.preprocess import Preprocessor
from app.model.errors import WeightsUnavailableError
from app.model.spec import RANDOM, STATE_DICT_SUFFIXES, ModelSpec, looks_like_path

__all__ = [
    "RANDOM",
    "STATE_DICT_SUFFIXES",
    "LoadedModel",
    "WeightsSource",
    "WeightsSourceKind",
    "WeightsUnavailableError",
    "describe",
    "load_model",
    "resolve_weights",
    "weights_names",
]


class WeightsSourceKind(StrEnum):
    FILE = "file"
    CACHE = "cache"
    DOWNLOAD = "download"
    RANDOM = "random"


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights come from, decided before loading."""

    model_name: str
    kind: WeightsSourceKind
    # torchvision's metadata (labels, preprocessing) for these weights.
    meta_weights: WeightsEnum
    path: Path | None

    @property
    def weights_id(self) -> str:
        """A short stable id for /ready, responses and the model_info metric."""
        if self.kind is WeightsSourceKind.RANDOM:
            return RANDOM
        if self.kind is WeightsSourceKind.FILE:
            assert self.path is not None
            return f"file:{self.path.name}"
        return f"{type(self.meta_weights).__name__}.{self.meta_weights.name}"

    @property
    def is_random(self) -> bool:
        return self.kind is WeightsSourceKind.RANDOM


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    source: WeightsSource
    labels: list[str]

    @property
    def spec(self) -> ModelSpec:
        return describe(self.source)


def hub_checkpoint_dir() -> Path:
    """torch's cache for downloaded weights; honours TORCH_HOME."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_enum(model_name: str) -> type[WeightsEnum]:
    try:
        enum: type[WeightsEnum] = models.get_model_weights(model_name)
    except ValueError as exc:
        raise WeightsUnavailableError(f"model {model_name!r} has no torchvision weights") from exc
    return enum


def file_name(weights: WeightsEnum) -> str:
    return os.path.basename(str(weights.url))


def named_weights(enum: type[WeightsEnum], spec: str) -> WeightsEnum:
    name = spec.split(".")[-1].upper()  # accepts IMAGENET1K_V1 and ResNet50_Weights.IMAGENET1K_V1
    if name == "DEFAULT":
        default: WeightsEnum = enum["DEFAULT"]
        return default
    try:
        return enum[name]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise WeightsUnavailableError(
            f"unknown weights {spec!r} for {enum.__name__}; SERVING_MODEL_WEIGHTS takes {names}, "
            "a path to a .pth file, or random"
        ) from None


def resolve_weights(
    model_name: str,
    spec: str,
    *,
    allow_download: bool,
    cache_dir: Path | None = None,
) -> WeightsSource:
    """Decide where the weights come from without loading them. Raises WeightsUnavailableError."""
    enum = weights_enum(model_name)
    default: WeightsEnum = enum["DEFAULT"]
    if spec.lower() == RANDOM:
        return WeightsSource(model_name, WeightsSourceKind.RANDOM, default, None)

    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file {str(path)!r} (SERVING_MODEL_WEIGHTS) does not exist or is not "
                "a file; mount it there, or set SERVING_MODEL_WEIGHTS=DEFAULT to use torch's "
                "cache"
            )
        # A file saved by torchvision keeps its name (resnet50-11ad3fa6.pth): that tells us
        # which weights it is, hence the right preprocessing. Otherwise the default's metadata.
        meta = next((w for w in enum if file_name(w) == path.name), default)
        return WeightsSource(model_name, WeightsSourceKind.FILE, meta, path)

    weights = named_weights(enum, spec)
    cached = (cache_dir or hub_checkpoint_dir()) / file_name(weights)
    if cached.is_file():
        return WeightsSource(model_name, WeightsSourceKind.CACHE, weights, cached)
    if allow_download:
        return WeightsSource(model_name, WeightsSourceKind.DOWNLOAD, weights, cached)
    raise WeightsUnavailableError(
        f"no weights for {model_name} ({type(weights).__name__}.{weights.name}): "
        f"{str(cached)!r} is not in torch's cache and SERVING_ALLOW_WEIGHTS_DOWNLOAD is false; "
        "put the file there (TORCH_HOME sets the cache), set SERVING_MODEL_WEIGHTS to a .pth "
        "path, allow the download, or set SERVING_MODEL_WEIGHTS=random for a smoke run"
    )


def weights_names(source: WeightsSource) -> tuple[str, ...]:
    """The SERVING_MODEL_WEIGHTS values that select these weights (a manifest records them)."""
    if source.is_random:
        return (RANDOM,)
    if source.kind is WeightsSourceKind.FILE:
        return (source.weights_id,)
    meta = source.meta_weights
    names = [source.weights_id, meta.name]
    if type(meta)["DEFAULT"] is meta:
        names.append("DEFAULT")
    return tuple(names)


def describe(source: WeightsSource) -> ModelSpec:
    """What the service needs to know of these weights before loading them."""
    return ModelSpec(
        model_name=source.model_name,
        weights_id=source.weights_id,
        weights_source=source.kind.value,
        random_weights=source.is_random,
        labels=tuple(source.meta_weights.meta["categories"]),
        preprocessor=Preprocessor.from_transforms(source.meta_weights.transforms()),
        from_ir=False,
    )


def _load_state_dict(source: WeightsSource) -> dict[str, Any]:
    if source.kind is WeightsSourceKind.DOWNLOAD:
        try:
            state: dict[str, Any] = source.meta_weights.get_state_dict(
                progress=False, check_hash=True
            )
        except Exception as exc:
            raise WeightsUnavailableError(
                f"could not download {source.weights_id} for {source.model_name}: {exc}; "
                "without network access, put the file in torch's cache or set "
                "SERVING_MODEL_WEIGHTS to a .pth path"
            ) from exc
        return state
    assert source.path is not None
    try:
        loaded = torch.load(source.path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"weights file {str(source.path)!r} could not be read as a state dict: {exc}"
        ) from exc
    nested = loaded.get("state_dict") if isinstance(loaded, dict) else None
    if isinstance(nested, dict):
        loaded = nested  # the common training-checkpoint layout
    if not isinstance(loaded, dict):
        raise WeightsUnavailableError(
            f"weights file {str(source.path)!r} holds a {type(loaded).__name__}, not a state dict"
        )
    return loaded


def load_model(source: WeightsSource, *, seed: int = 0) -> LoadedModel:
    """Build the architecture and load the weights; eval mode, no gradients."""
    labels = list(source.meta_weights.meta["categories"])
    if source.is_random:
        # fork_rng keeps the process-wide RNG untouched: seeding is this model's business.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = models.get_model(source.model_name, weights=None, num_classes=len(labels))
    else:
        model = models.get_model(source.model_name, weights=None, num_classes=len(labels))
        state = _load_state_dict(source)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise WeightsUnavailableError(
                f"weights {source.weights_id} do not fit {source.model_name}: {first}"
            ) from exc
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return LoadedModel(model=model, source=source, labels=labels)
