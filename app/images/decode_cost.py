"""A memory budget for decoded images in flight.

Counting images bounds nothing when one 49-megapixel PNG of 160 KB decodes to 200-700 MB. So
every image, once its header is read and before any pixel is decoded, reserves what its decode
will really cost at the peak (`decode_peak_bytes`), and gives it back when its tensor exists and
the decoded image is freed. An image that does not fit waits (first come, first served) within
its deadline, then gets 503 `memory_busy`; one larger than the whole budget gets 413.

The cost model is per pixel and follows what the code allocates;
bench/experiments/decode_memory.py measures the real peak (RSS high-water mark, one subprocess
per image) for every decoder and the common modes, and a test keeps the model at or above every
measured figure.
"""

from __future__ import annotations

import math

from app.images.decode import ALPHA_MODES, SIXTEEN_BIT_MODES, OpenedImage
from app.memory.budget import MIB

# An RGB pixel as Pillow holds it (RGBX): the unit of SERVING_MAX_PIXELS_IN_FLIGHT.
RGB_PIXEL_BYTES = 4
# Without a memory limit: room for one 49 MP grayscale PNG, or two RGB ones at a time.
FALLBACK_BUDGET_BYTES = 384 * MIB
# With a limit: this share of what the loaded model leaves free (the rest is for queued
# tensors, batches, request bodies and the allocator's slack), never below the floor.
LIMIT_SHARE = 0.5
MIN_BUDGET_BYTES = 64 * MIB

# Over the modelled peak: allocator rounding and measurement noise (measured peaks sit 0-3 %
# above the model), and a fixed part for codec state, the resize's rows and the tensor.
_MARGIN = 1.10
_FIXED_BYTES = 4 * MIB

_ONE_BYTE_MODES = frozenset({"1", "L", "P"})


def _stored(mode: str) -> int:
    """Bytes per pixel of a Pillow image in `mode` (multi-band and 32-bit modes take 4)."""
    if mode in _ONE_BYTE_MODES:
        return 1
    return 2 if mode in SIXTEEN_BIT_MODES else 4


def _conversion(mode: str, transparent: bool) -> int:
    """Peak bytes per pixel while the decoded image becomes RGB (app.images.decode.to_rgb), the
    decoded image still alive."""
    s = _stored(mode)
    if mode == "RGB":
        return s
    if mode in SIXTEEN_BIT_MODES or mode == "F":  # array copy, scaled copy, uint8
        return max(3 * s + 1, s + 1 + RGB_PIXEL_BYTES)
    if mode == "I":  # array copy, shifted, clipped, uint8
        return 4 * s + 1
    if mode in ALPHA_MODES or transparent:  # RGBA copy (not for RGBA), white, composite
        return (s if mode == "RGBA" else s + 4) + 8
    return s + RGB_PIXEL_BYTES


def _tiff_strip_bytes(opened: OpenedImage) -> int:
    """libtiff decodes a strip (or tile row) at a time into a buffer of its own: up to the whole
    image when the file is one strip."""
    tags = getattr(opened.image, "tag_v2", {})
    width, height = opened.size
    rows = tags.get(323) or tags.get(278) or height  # TileLength, RowsPerStrip
    bits = tags.get(258) or (8,)  # BitsPerSample, one per sample
    samples = max(int(tags.get(277) or 1), len(bits) if isinstance(bits, tuple) else 1)
    depth = max(bits) if isinstance(bits, tuple) else int(bits)
    raw = math.ceil(samples * depth / 8)
    return min(int(rows), height) * width * max(raw, RGB_PIXEL_BYTES)


def _jpeg_coefficient_bytes(opened: OpenedImage, data: bytes) -> int:
    """Progressive and multi-scan JPEGs keep every DCT coefficient of the whole image (2 bytes
    per sample, full resolution, whatever the draft scale) until the last scan is read."""
    progressive = "progressive" in opened.image.info or "progression" in opened.image.info
    if not progressive and data.count(b"\xff\xda") <= 1:  # SOS markers: 0xFFDA never occurs
        return 0  # inside entropy-coded data (0xFF is stuffed there), so this counts scans
    width, height = opened.original_size
    # Components at their sampling (4:2:0 colour: 1 + 1/4 + 1/4 of the pixels).
    layers = getattr(opened.image, "layer", None) or [(0, 1, 1, 0)] * len(opened.image.getbands())
    top_h = max(int(layer[1]) for layer in layers) or 1
    top_v = max(int(layer[2]) for layer in layers) or 1
    samples = sum(int(layer[1]) * int(layer[2]) for layer in layers) / (top_h * top_v)
    return int(2 * samples * width * height)


def _may_rotate(opened: OpenedImage, data: bytes) -> bool:
    """Whether EXIF/XMP orientation will transpose the image (a second full copy for a moment).
    PNG can carry its metadata after the pixels, where the header read cannot see it: any
    metadata chunk counts as a rotation there."""
    if opened.format == "PNG":
        return any(m in data for m in (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp"))
    try:
        return opened.image.getexif().get(0x0112, 1) not in (1, None)
    except Exception:
        return True


def decode_peak_bytes(opened: OpenedImage, data: bytes) -> int:
    """What decoding and preprocessing this image will add to the process's memory at its
    peak, from its header alone."""
    width, height = opened.size
    pixels = width * height
    mode = opened.mode
    stored = _stored(mode)
    transparent = mode == "P" and "transparency" in opened.image.info
    # Buffers that live only while the decoder runs, and those that stay with the image.
    decoding = 0
    lasting = 0
    if opened.format == "WEBP":  # libwebp's two canvases + the frame's bytes, Pillow's copy
        decoding, lasting = 12 * pixels, 8 * pixels
    elif opened.format == "TIFF":
        decoding = _tiff_strip_bytes(opened)
    elif opened.format == "BMP":  # RLE: the pure-Python decoder's buffer and its bytes copy
        decoding = 2 * stored * pixels
    elif opened.format == "JPEG":
        decoding = _jpeg_coefficient_bytes(opened, data)
    peak = max(
        stored * pixels + decoding,
        _conversion(mode, transparent) * pixels + lasting,
        2 * stored * pixels + lasting if _may_rotate(opened, data) else 0,
    )
    return int(peak * _MARGIN) + _FIXED_BYTES


def budget_bytes(
    pixels_setting: int, *, limit: int | None, baseline: int | None
) -> tuple[int, str]:
    """The budget and how it was chosen: SERVING_MAX_PIXELS_IN_FLIGHT when set; else a share of
    the memory limit the loaded model leaves free; else the fallback."""
    if pixels_setting > 0:
        return pixels_setting * RGB_PIXEL_BYTES, "SERVING_MAX_PIXELS_IN_FLIGHT"
    if limit is None:
        return FALLBACK_BUDGET_BYTES, "no memory limit: fallback"
    free = limit - (baseline or 0)
    share = int(free * LIMIT_SHARE)
    return max(MIN_BUDGET_BYTES, share), f"{LIMIT_SHARE:.0%} of (limit {limit} - RSS {baseline})"
