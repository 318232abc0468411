"""Test images: real photographs shipped inside installed packages, and generated variants
(every supported format and colour mode, EXIF orientation, and hostile files)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import skimage
from PIL import Image

MPL_SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"

# Real photographs (no downloads): name -> path.
PHOTOS: dict[str, Path] = {
    "grace_hopper": MPL_SAMPLES / "grace_hopper.jpg",
    "chelsea": SKIMAGE_DATA / "chelsea.png",
    "coffee": SKIMAGE_DATA / "coffee.png",
    "astronaut": SKIMAGE_DATA / "astronaut.png",
    "rocket": SKIMAGE_DATA / "rocket.jpg",
    "motorcycle": SKIMAGE_DATA / "motorcycle_left.png",
}


def photo_bytes(name: str) -> bytes:
    return PHOTOS[name].read_bytes()


def photo(name: str) -> Image.Image:
    with Image.open(PHOTOS[name]) as img:
        return img.convert("RGB")


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def sixteen_bit(gray: Image.Image, fmt: str = "PNG") -> bytes:
    """A 16-bit grayscale image (PNG or TIFF) whose values use the full 0..65535 range."""
    arr = np.asarray(gray.convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(arr), fmt)


def png_with_header_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (valid CRC) with a tiny body: a pixel-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]
