"""int8 (OpenVINO, quantized with NNCF at start-up): calibrated on photographs that are not the
test photographs, and held to the same accuracy guard as every path: torchvision's fp32 top-1
kept and at least 4 of its top 5, on every test photograph."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from app.model.backends.int8 import CALIBRATION_PHOTOS, calibration_dir, calibration_inputs
from app.model.options import BackendChoice, Precision
from app.model.weights import describe, resolve_weights
from helpers.accuracy import (
    assert_keeps_top1_and_four_of_top5,
    photos_batch,
    reference_logits,
    runtime,
)
from helpers.images import PHOTOS


def test_calibration_photographs_are_not_the_test_photographs() -> None:
    test_files = {path.resolve() for path in PHOTOS.values()}
    calibration = {(calibration_dir() / name).resolve() for name in CALIBRATION_PHOTOS}
    assert len(calibration) == len(CALIBRATION_PHOTOS) >= 10
    assert not test_files & calibration
    for path in calibration:
        with Image.open(path) as img:
            assert min(img.size) >= 100, path  # photographs, not icons


def test_calibration_inputs_are_preprocessed_like_uploads() -> None:
    source = resolve_weights("resnet18", "random", allow_download=False)
    inputs = calibration_inputs(describe(source).preprocessor)
    assert len(inputs) == 6 * len(CALIBRATION_PHOTOS)
    assert {x.shape for x in inputs} == {(1, 3, 224, 224)}
    assert all(x.dtype.name == "float32" for x in inputs)


def test_int8_without_nncf_fails_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    with pytest.raises(RuntimeError, match=r"resnet-serving\[int8\]"):
        runtime("resnet18", precision=Precision.INT8)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["resnet18", "resnet50"])
def test_int8_keeps_top1_and_four_of_top5(
    model_name: str, record_property: Callable[[str, object], None]
) -> None:
    x = photos_batch(model_name)
    reference = reference_logits(model_name, x)
    int8 = runtime(model_name, precision=Precision.INT8, backend=BackendChoice.AUTO)
    assert int8.info.backend == "openvino"
    assert int8.info.dtype == "int8"
    logits = int8.logits(x)
    max_diff = float(np.abs(reference - logits).max())
    record_property("max_logit_difference_int8", max_diff)
    print(f"{model_name} int8: max |logit fp32 - logit int8| = {max_diff:.4f}")
    assert_keeps_top1_and_four_of_top5(reference, logits)
