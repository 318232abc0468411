"""int8 for the OpenVINO backend: post-training quantization with NNCF, when the image is built
(`python -m app.model.ir.build --precision int8`) or, without a build-time model, at start-up.

Calibration needs real photographs. It uses ones that ship inside scikit-image's data folder
(installed with the `int8` extra, as NNCF is), and never the photographs the tests judge
accuracy on (tests/helpers/images.py: grace_hopper, chelsea, coffee, astronaut, rocket,
motorcycle_left); tests/model/test_int8.py keeps the two sets disjoint. Each photograph gives
several crops (whole image, centre, corners, mirrored), the usual way to stretch a small
calibration set.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from app.images.preprocess import Preprocessor

log = logging.getLogger(__name__)

# Photographs in skimage/data used for calibration: colour photographs first, then grey ones
# (converted to RGB, as the service does with grey uploads).
CALIBRATION_PHOTOS = (
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "cell.png",
    "clock_motion.png",
    "page.png",
)

_INSTALL_HINT = "SERVING_PRECISION=int8 needs the int8 extra: pip install 'resnet-serving[int8]'"


def calibration_dir() -> Path:
    try:
        import skimage
    except ImportError as exc:
        raise RuntimeError(f"{_INSTALL_HINT} (scikit-image ships the calibration photos)") from exc
    return Path(skimage.__file__).parent / "data"


def _views(image: Image.Image) -> Iterator[Image.Image]:
    """The whole photograph, its centre and four corner crops at 60%, every other one
    mirrored: 6 samples per photograph, 72 in all (about half a minute of calibration for
    ResNet-50 on 2 CPUs)."""
    width, height = image.size
    w, h = int(width * 0.6), int(height * 0.6)
    boxes = [
        (0, 0, width, height),
        ((width - w) // 2, (height - h) // 2, (width + w) // 2, (height + h) // 2),
        (0, 0, w, h),
        (width - w, 0, width, h),
        (0, height - h, w, height),
        (width - w, height - h, width, height),
    ]
    for number, box in enumerate(boxes):
        crop = image.crop(box)
        yield ImageOps.mirror(crop) if number % 2 else crop


def calibration_inputs(pre: Preprocessor) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """Preprocessed (1, 3, H, W) inputs, exactly as the service preprocesses uploads."""
    folder = calibration_dir()
    inputs = []
    for name in CALIBRATION_PHOTOS:
        with Image.open(folder / name) as img:
            rgb = img.convert("RGB")
        inputs += [pre(view)[None] for view in _views(rgb)]
    return inputs


def quantizer(preprocessor: Preprocessor) -> Any:
    """A transform ov.Model -> int8 ov.Model, for OpenVINOBackend's `quantize`. Fails at once
    (before any conversion) when NNCF or the calibration photographs are missing."""
    from app.model.backends.openvino_backend import block_telemetry

    block_telemetry()
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError as exc:
        raise RuntimeError(_INSTALL_HINT) from exc
    inputs = calibration_inputs(preprocessor)

    # NNCF logs in plain text to stdout and draws progress bars there: its messages go through
    # the service's logging instead (warnings and up), its progress bars nowhere.
    nncf_log = logging.getLogger("nncf")
    nncf_log.handlers.clear()
    nncf_log.propagate = True
    nncf_log.setLevel(logging.WARNING)

    def quantize(ov_model: Any) -> Any:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                ov_model,
                nncf.Dataset(inputs),
                subset_size=len(inputs),
                preset=nncf.QuantizationPreset.PERFORMANCE,
                fast_bias_correction=True,
                # Activation ranges from the calibration minima and maxima: with the default
                # (quantiles) a test photograph's larger activations were clipped and its top-1
                # changed; with these, none did (docs/PERFORMANCE.md, "int8").
                advanced_parameters=AdvancedQuantizationParameters(
                    activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
                ),
            )
        log.info(
            "int8 calibration done",
            extra={"samples": len(inputs), "seconds": round(time.perf_counter() - started, 2)},
        )
        return quantized

    return quantize
