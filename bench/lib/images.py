"""Benchmark inputs: real photographs from installed packages, a large JPEG made from one, and
many distinct photo-like JPEGs made from them (the prediction cache's benchmark)."""

from __future__ import annotations

import hashlib
import io
import math
import random
from pathlib import Path

import matplotlib
import skimage
from PIL import Image, ImageEnhance

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


# Colour photographs, and greyscale ones (tinted when used), shipped with matplotlib and
# scikit-image: the material of photo_variants.
_SKIMAGE = Path(skimage.__file__).parent / "data"
_VARIANT_SOURCES = [
    *_SOURCES,
    _SKIMAGE / "astronaut.png",
    _SKIMAGE / "motorcycle_left.png",
    _SKIMAGE / "motorcycle_right.png",
    _SKIMAGE / "hubble_deep_field.jpg",
    _SKIMAGE / "retina.jpg",
    _SKIMAGE / "camera.png",
    _SKIMAGE / "grass.png",
    _SKIMAGE / "gravel.png",
    _SKIMAGE / "brick.png",
]

# Sizes people upload (4:3, landscape or portrait), from a web photo to a 2 MP camera one.
PHOTO_SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200),
               (480, 640), (768, 1024), (1200, 1600))  # fmt: skip


def _variant(source: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A crop of `source` at `size`'s aspect (35 to 100% of what fits), flipped or not, scaled
    to `size`, its brightness, contrast and colour moved by up to 20%."""
    width, height = size
    fit = min(source.width / width, source.height / height)
    scale = fit * math.sqrt(rng.uniform(0.35, 1.0))
    crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
    left = rng.randint(0, source.width - crop_w)
    top = rng.randint(0, source.height - crop_h)
    img = source.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.resize(size, Image.Resampling.BICUBIC)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.8, 1.2))
    return img


def photo_variants(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct photo-like JPEGs, the same for the same seed: crops of the photographs
    above (greyscale ones tinted), scaled to one of PHOTO_SIZES, their tones moved a little,
    saved at quality 70 to 92. Natural images of realistic sizes (about 40 to 400 KB), not
    noise, and no two alike (a benchmark of a cache keyed by the bytes needs that)."""
    rng = random.Random(seed)
    sources: list[Image.Image] = []
    for path in _VARIANT_SOURCES:
        with Image.open(path) as img:
            if img.mode in ("L", "I", "I;16", "1"):
                gray = img.convert("L")
                tint = [(1.0, 0.95, 0.85), (0.9, 0.95, 1.0), (1.0, 1.0, 1.0)][len(sources) % 3]
                sources.append(Image.merge("RGB", [gray.point(lambda v, f=f: v * f) for f in tint]))
            else:
                sources.append(img.convert("RGB"))
    out: list[bytes] = []
    seen: set[bytes] = set()
    while len(out) < count:
        photo = _variant(rng.choice(sources), rng.choice(PHOTO_SIZES), rng)
        buf = io.BytesIO()
        photo.save(buf, format="JPEG", quality=rng.randint(70, 92))
        data = buf.getvalue()
        digest = hashlib.sha256(data).digest()
        if digest not in seen:
            seen.add(digest)
            out.append(data)
    return out
