"""Max-pixel images in every decoded format, small on the wire (a few hundred KB at most), as an
attacker or an unlucky client would send them: a 7000x7000 image is 49 MP, just under the default
SERVING_MAX_IMAGE_PIXELS (50e6), and each decodes to hundreds of MB.

Shared by bench/experiments/decode_memory.py (the real peak per decoder), the decode-budget
tests (the cost model against those peaks) and the memory-budget test (64 of them at once
against a server in a memory-limited cgroup). Everything is generated; the content
is a flat colour with a little structure, which every codec compresses to almost nothing.

And the opposite, `WIRE_IMAGES`: an image as large on the wire as uploads may be (10 MiB) with
few pixels, for the body memory budget.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

SIDE = 7000  # 49,000,000 pixels


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _orientation_exif(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: rotate 90 degrees, so the decoder must transpose
    return exif.tobytes()


def png(
    side: int = SIDE, *, colour_type: int = 2, bit_depth: int = 8, rotated: bool = False
) -> bytes:
    """A valid PNG of zeros written row by row (no side x side image held here). colour_type:
    0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA. `rotated`: an eXIf orientation chunk."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\x00" + b"\x00" * (side * channels * bit_depth // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, colour_type, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", ihdr)
    if colour_type == 3:
        chunks += _png_chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff")
    if rotated:
        chunks += _png_chunk(b"eXIf", _orientation_exif().removeprefix(b"Exif\x00\x00"))
    return b"\x89PNG\r\n\x1a\n" + chunks + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def bmp_rle8(side: int = SIDE) -> bytes:
    """An 8-bit RLE-compressed BMP (Pillow decodes it, cannot write it): runs of 255 pixels."""
    run = b"\xff\x00"
    full, rest = divmod(side, 255)
    row = run * full + (bytes([rest, 0]) if rest else b"") + b"\x00\x00"  # end of line
    pixels = row * side + b"\x00\x01"  # end of bitmap
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def _saved(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def pillow_encoded(fmt: str, mode: str, side: int = SIDE, **params: object) -> bytes:
    """Encoded by Pillow from a flat image (it holds side x side pixels while encoding)."""
    img = Image.new(mode, (side, side), 0)
    try:
        return _saved(img, fmt, **params)
    finally:
        img.close()


# name -> (format as Pillow names it, mode the decoder produces, maker). The first image of each
# format is the one the memory-budget test sends 64 times at once.
IMAGES: dict[str, tuple[str, str, Callable[[], bytes]]] = {
    "png rgb": ("PNG", "RGB", lambda: png(colour_type=2)),
    "png gray": ("PNG", "L", lambda: png(colour_type=0)),
    "png rgba": ("PNG", "RGBA", lambda: png(colour_type=6)),
    "png palette": ("PNG", "P", lambda: png(colour_type=3)),
    "png gray 16-bit": ("PNG", "I;16", lambda: png(colour_type=0, bit_depth=16)),
    "png rgb rotated": ("PNG", "RGB", lambda: png(colour_type=2, rotated=True)),
    "tiff rgb deflate": (
        "TIFF", "RGB", lambda: pillow_encoded("TIFF", "RGB", compression="tiff_deflate"),
    ),
    "tiff rgb deflate one strip": (
        "TIFF", "RGB",
        lambda: pillow_encoded("TIFF", "RGB", compression="tiff_deflate", strip_size=2**31 - 1),
    ),
    "tiff gray lzw": ("TIFF", "L", lambda: pillow_encoded("TIFF", "L", compression="tiff_lzw")),
    "webp rgb lossless": (
        "WEBP", "RGB", lambda: pillow_encoded("WEBP", "RGB", lossless=True, method=0),
    ),
    "webp rgba lossless": (
        "WEBP", "RGBA", lambda: pillow_encoded("WEBP", "RGBA", lossless=True, method=0),
    ),
    "tiff gray 16-bit one strip": (
        "TIFF", "I;16",
        lambda: pillow_encoded("TIFF", "I;16", compression="tiff_deflate", strip_size=2**31 - 1),
    ),
    "gif": ("GIF", "P", lambda: pillow_encoded("GIF", "P")),
    "gif transparent": ("GIF", "P", lambda: pillow_encoded("GIF", "P", transparency=0)),
    "bmp rle8": ("BMP", "L", bmp_rle8),
    "jpeg rgb": ("JPEG", "RGB", lambda: pillow_encoded("JPEG", "RGB", quality=50)),
    "jpeg gray": ("JPEG", "L", lambda: pillow_encoded("JPEG", "L", quality=50)),
    "jpeg rgb rotated": (
        "JPEG", "RGB", lambda: pillow_encoded("JPEG", "RGB", quality=50, exif=_orientation_exif()),
    ),
    "jpeg rgb progressive": (
        "JPEG", "RGB", lambda: pillow_encoded("JPEG", "RGB", quality=50, progressive=True),
    ),
    "jpeg rgb progressive 4:4:4": (
        "JPEG", "RGB",
        lambda: pillow_encoded("JPEG", "RGB", quality=50, progressive=True, subsampling=0),
    ),
}  # fmt: skip

# The image per format that the memory-budget test bursts (the formats of the hostile corpus).
BURST_IMAGES = ("png rgb", "tiff rgb deflate", "webp rgba lossless", "gif", "bmp rle8")


def noise_jpeg(side: int = 2950, quality: int = 95) -> bytes:
    """Random pixels, which JPEG cannot compress: 2950 x 2950 at quality 95 is 9.8 MB, just
    under the default SERVING_MAX_UPLOAD_BYTES (10 MiB), and 8.7 MP, far under the pixel cap."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return _saved(Image.fromarray(pixels), "JPEG", quality=quality)


# Large on the wire rather than in pixels: what the body memory budget (app/memory/bodies.py) is
# for. The memory-budget test and bench/memory_burst.py burst these as well.
WIRE_IMAGES: dict[str, Callable[[], bytes]] = {"jpeg noise 10mb": noise_jpeg}


def padded_png(total_bytes: int, seed: int = 0) -> bytes:
    """A valid 32x32 PNG of `total_bytes`: the rest is a private ancillary chunk that decoders
    skip, so the body is large while decoding it costs nothing (what a body costs, alone)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    png = _saved(Image.fromarray(pixels), "PNG")
    filler = bytes(max(0, total_bytes - len(png) - 12))
    chunk = struct.pack(">I", len(filler)) + b"prIv" + filler
    chunk += struct.pack(">I", zlib.crc32(b"prIv" + filler))
    return png[:-12] + chunk + png[-12:]  # before IEND
