"""The server's answers equal torchvision's own reference pipeline (`weights.transforms()` and the
same weights) on real photographs: top-5 classes identical, scores within 1e-4."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torchvision import models

from app.main import create_app
from app.model.weights import hub_checkpoint_dir
from conftest import make_settings, wait_ready
from helpers.accuracy import assert_keeps_top1_and_four_of_top5
from helpers.images import PHOTOS

TOLERANCE = 1e-4


def reference_top5(model: torch.nn.Module, weights: Any, path: Path) -> list[tuple[int, float]]:
    transform = weights.transforms()
    with Image.open(path) as img:
        x = transform(img.convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        probs = torch.softmax(model.eval()(x), dim=1)[0]
    scores, indices = torch.topk(probs, 5)
    return list(zip(indices.tolist(), scores.tolist(), strict=True))


def random_reference(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model: torch.nn.Module = models.get_model(name, weights=None)
    return model


def served_top5(client: TestClient, path: Path) -> list[tuple[int, float]]:
    response = client.post("/predict", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 200, response.text
    return [(p["class_id"], p["score"]) for p in response.json()["predictions"]]


def assert_same(served: list[tuple[int, float]], reference: list[tuple[int, float]]) -> None:
    assert [c for c, _ in served] == [c for c, _ in reference]
    for (_, got), (_, want) in zip(served, reference, strict=True):
        assert abs(got - want) <= TOLERANCE, (got, want)


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_resnet18_matches_torchvision_reference(client: TestClient, photo: str) -> None:
    reference = random_reference("resnet18")
    weights = models.get_model_weights("resnet18").DEFAULT
    assert_same(
        served_top5(client, PHOTOS[photo]), reference_top5(reference, weights, PHOTOS[photo])
    )


@pytest.fixture(scope="module")
def resnet50_client() -> Iterator[TestClient]:
    settings = make_settings(model_name="resnet50", num_threads=2)
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.mark.slow
@pytest.mark.parametrize("photo", ["grace_hopper", "chelsea", "coffee"])
def test_resnet50_matches_torchvision_reference(resnet50_client: TestClient, photo: str) -> None:
    reference = random_reference("resnet50")
    weights = models.get_model_weights("resnet50").DEFAULT
    assert_same(
        served_top5(resnet50_client, PHOTOS[photo]),
        reference_top5(reference, weights, PHOTOS[photo]),
    )


# --- with the real ImageNet weights, where they exist ---------------------------------------

REAL = models.ResNet50_Weights.IMAGENET1K_V2
REAL_FILE = hub_checkpoint_dir() / Path(REAL.url).name

# What ResNet-50 (IMAGENET1K_V2) must see in these photographs: class names in the top 5.
GOLDEN = {
    "grace_hopper": {"military uniform"},
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso", "cup"},
}


@pytest.fixture(scope="module")
def real_client() -> Iterator[TestClient]:
    if not REAL_FILE.is_file():
        pytest.skip(
            f"real ImageNet weights not in torch's cache ({REAL_FILE}); the GitHub workflow "
            "downloads them and runs these tests"
        )
    settings = make_settings(model_name="resnet50", model_weights="DEFAULT", num_threads=2)
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.mark.slow
@pytest.mark.real_weights
@pytest.mark.parametrize("photo", sorted(GOLDEN))
def test_real_weights_golden_classes(real_client: TestClient, photo: str) -> None:
    response = real_client.post("/predict", files={"file": (photo, PHOTOS[photo].read_bytes())})
    labels = {p["label"] for p in response.json()["predictions"]}
    assert labels & GOLDEN[photo], labels


@pytest.mark.slow
@pytest.mark.real_weights
@pytest.mark.parametrize("photo", sorted(GOLDEN))
def test_real_weights_match_torchvision_reference(real_client: TestClient, photo: str) -> None:
    reference = models.resnet50(weights=REAL)
    assert_same(
        served_top5(real_client, PHOTOS[photo]), reference_top5(reference, REAL, PHOTOS[photo])
    )


FAST_PATHS = [
    ("torch", "bf16"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]


@pytest.mark.slow
@pytest.mark.real_weights
@pytest.mark.parametrize(
    ("backend", "precision"), FAST_PATHS, ids=["-".join(p) for p in FAST_PATHS]
)
def test_real_weights_fast_paths_keep_the_answers(
    backend: str, precision: str, record_property: Any
) -> None:
    """The accuracy guard of every backend and precision with trained weights: torchvision's
    fp32 top-1 kept and at least 4 of its top 5, on every golden photograph; the largest logit
    difference is reported."""
    from app.images.preprocess import Preprocessor
    from app.model.options import BackendChoice, Precision
    from app.model.runtime import ModelRuntime
    from app.model.weights import WeightsSource, WeightsSourceKind, load_model

    if not REAL_FILE.is_file():
        pytest.skip(f"real ImageNet weights not in torch's cache ({REAL_FILE})")
    source = WeightsSource("resnet50", WeightsSourceKind.CACHE, REAL, REAL_FILE)
    pre = Preprocessor.from_transforms(REAL.transforms())
    batch = []
    for name in sorted(GOLDEN):
        with Image.open(PHOTOS[name]) as img:
            batch.append(pre(img.convert("RGB")))
    x = np.stack(batch)
    with torch.inference_mode():
        reference = models.resnet50(weights=REAL).eval()(torch.from_numpy(x)).numpy()
    fast = ModelRuntime(
        load_model(source),
        num_threads=2,
        precision=Precision(precision),
        backend=BackendChoice(backend),
    ).logits(x)
    record_property(
        f"max_logit_difference_real_{backend}_{precision}", float(np.abs(reference - fast).max())
    )
    assert_keeps_top1_and_four_of_top5(reference, fast)
