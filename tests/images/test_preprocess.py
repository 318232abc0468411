"""Our preprocessing (numpy) against torchvision's `weights.transforms()` (a torch tensor): the
same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision.models import get_model_weights

from app.images.preprocess import Preprocessor, resized_size
from helpers.images import PHOTOS, photo


@pytest.mark.parametrize("model_name", ["resnet18", "resnet50", "vit_b_16", "efficientnet_b0"])
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_tensor_equals_torchvision_reference(model_name: str, name: str) -> None:
    weights = get_model_weights(model_name).DEFAULT
    reference = weights.transforms()
    ours = Preprocessor.from_transforms(reference)
    image = photo(name)
    expected = reference(image).numpy()
    got = ours(image)
    assert got.shape == expected.shape
    assert got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-6, rtol=0), np.abs(got - expected).max()


@pytest.mark.parametrize("size", [(1, 1), (223, 500), (500, 223), (224, 224), (1000, 250)])
def test_odd_sizes_match_the_reference_too(size: tuple[int, int]) -> None:
    weights = get_model_weights("resnet50").DEFAULT
    reference = weights.transforms()
    image = photo("chelsea").resize(size)
    got = Preprocessor.from_transforms(reference)(image)
    assert np.allclose(got, reference(image).numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(3000, 7), (7, 3000), (2000, 5)])
def test_extreme_aspect_ratios_resample_only_the_crop(size: tuple[int, int]) -> None:
    weights = get_model_weights("resnet50").DEFAULT
    reference = weights.transforms()
    image = photo("chelsea").resize(size)
    got = Preprocessor.from_transforms(reference)(image)
    # One 8-bit level, normalised by the smallest std, is the most a pixel may differ.
    one_level = 1 / 255 / min(weights.transforms().std)
    assert np.abs(got - reference(image).numpy()).max() <= one_level + 1e-6


def test_a_one_pixel_high_strip_costs_no_more_than_a_crop() -> None:
    # Resized the plain way, 100000x1 would become 23200000x232 pixels (16 GB of RGB).
    weights = get_model_weights("resnet50").DEFAULT
    got = Preprocessor.from_transforms(weights.transforms())(Image.new("RGB", (100_000, 1)))
    assert got.shape == (3, 224, 224)


def test_resize_rule_keeps_aspect_and_truncates() -> None:
    assert resized_size(451, 300, 232) == (348, 232)
    assert resized_size(300, 451, 232) == (232, 348)
    assert resized_size(100, 100, 232) == (232, 232)


def test_output_is_contiguous_chw() -> None:
    weights = get_model_weights("resnet18").DEFAULT
    got = Preprocessor.from_transforms(weights.transforms())(Image.new("RGB", (300, 400)))
    assert got.shape == (3, 224, 224)
    assert got.flags.c_contiguous
