"""Weights resolution order and loading; failures say what to set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from app.model.weights import (
    WeightsSourceKind,
    WeightsUnavailableError,
    load_model,
    resolve_weights,
)


def param(model: torch.nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(name)


def test_random_is_explicit_and_reported() -> None:
    source = resolve_weights("resnet18", "random", allow_download=False)
    assert source.kind is WeightsSourceKind.RANDOM
    assert source.is_random
    assert source.weights_id == "random"


def test_random_weights_are_reproducible_and_leave_global_rng_alone() -> None:
    source = resolve_weights("resnet18", "random", allow_download=False)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_model(source, seed=7).model
    after = torch.rand(1)
    b = load_model(source, seed=7).model
    c = load_model(source, seed=8).model
    assert torch.equal(before, after)  # loading did not consume the caller's random stream
    assert torch.equal(param(a, "fc.weight"), param(b, "fc.weight"))
    assert not torch.equal(param(a, "fc.weight"), param(c, "fc.weight"))


def test_explicit_file_is_loaded(tmp_path: Path) -> None:
    torch.manual_seed(3)
    reference = models.resnet18()
    path = tmp_path / "my-weights.pth"
    torch.save(reference.state_dict(), path)
    source = resolve_weights("resnet18", str(path), allow_download=False)
    assert source.kind is WeightsSourceKind.FILE
    assert source.weights_id == "file:my-weights.pth"
    loaded = load_model(source)
    assert torch.equal(param(loaded.model, "fc.weight"), param(reference, "fc.weight"))
    assert not loaded.model.training
    assert len(loaded.labels) == 1000


def test_file_named_like_torchvision_gets_that_weights_metadata(tmp_path: Path) -> None:
    v1 = models.ResNet50_Weights.IMAGENET1K_V1
    path = tmp_path / Path(v1.url).name
    path.write_bytes(b"placeholder, never loaded by resolve")
    source = resolve_weights("resnet50", str(path), allow_download=False)
    assert source.meta_weights is v1  # V1 preprocesses with resize 256, not V2's 232


def test_training_checkpoint_layout_is_accepted(tmp_path: Path) -> None:
    model = models.resnet18()
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    loaded = load_model(resolve_weights("resnet18", str(path), allow_download=False))
    assert torch.equal(param(loaded.model, "conv1.weight"), param(model, "conv1.weight"))


def test_missing_file_fails_with_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="SERVING_MODEL_WEIGHTS"):
        resolve_weights("resnet50", str(tmp_path / "nope.pth"), allow_download=True)


def test_file_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(models.resnet18().state_dict(), path)
    source = resolve_weights("resnet34", str(path), allow_download=False)
    with pytest.raises(WeightsUnavailableError, match="do not fit resnet34"):
        load_model(source)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsUnavailableError, match="could not be read"):
        load_model(resolve_weights("resnet18", str(path), allow_download=False))


def test_cache_is_used_before_download(tmp_path: Path) -> None:
    cached = tmp_path / Path(models.ResNet18_Weights.IMAGENET1K_V1.url).name
    torch.save(models.resnet18().state_dict(), cached)
    source = resolve_weights("resnet18", "DEFAULT", allow_download=True, cache_dir=tmp_path)
    assert source.kind is WeightsSourceKind.CACHE
    assert source.path == cached
    assert source.weights_id == "ResNet18_Weights.IMAGENET1K_V1"


def test_named_weights_not_cached_go_to_download_when_allowed(tmp_path: Path) -> None:
    source = resolve_weights("resnet50", "IMAGENET1K_V1", allow_download=True, cache_dir=tmp_path)
    assert source.kind is WeightsSourceKind.DOWNLOAD
    assert source.meta_weights is models.ResNet50_Weights.IMAGENET1K_V1


def test_no_cache_and_no_download_fails_with_every_option_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("resnet50", "DEFAULT", allow_download=False, cache_dir=tmp_path)
    message = str(info.value)
    for hint in ("TORCH_HOME", "SERVING_MODEL_WEIGHTS", "random", "SERVING_ALLOW_WEIGHTS_DOWNLOAD"):
        assert hint in message


def test_unknown_weights_name_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="IMAGENET1K_V2"):
        resolve_weights("resnet50", "IMAGENET22K", allow_download=True, cache_dir=tmp_path)
