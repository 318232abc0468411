"""Benchmark inputs: real photographs from installed packages, and a large JPEG made from one."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import skimage
from PIL import Image

_SOURCES = [
    Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    Path(skimage.__file__).parent / "data" / "chelsea.png",
    Path(skimage.__file__).parent / "data" / "coffee.png",
    Path(skimage.__file__).parent / "data" / "rocket.jpg",
]


def sample_photos() -> list[Image.Image]:
    out = []
    for path in _SOURCES:
        with Image.open(path) as img:
            out.append(img.convert("RGB"))
    return out


def small_jpeg() -> bytes:
    """grace_hopper.jpg as shipped: 512x600, about 61 KB, a typical web photo."""
    return _SOURCES[0].read_bytes()


def large_jpeg(width: int = 4000, height: int = 3000, quality: int = 90) -> bytes:
    """A 12-megapixel JPEG, like a phone camera's, made by upscaling a real photograph."""
    with Image.open(_SOURCES[2]) as img:
        big = img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
