"""Turning untrusted bytes into an RGB image, or a clear client error.

Everything here assumes hostile input: the format is sniffed from the bytes (never from a file
name), only a short list of formats is parsed at all, the pixel count is checked from the header
before any pixel is decoded (decompression bombs), and any failure of the decoder becomes an
`InvalidImageError` instead of escaping as a 500.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import (
    EmptyImageError,
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedImageFormatError,
)

# Pillow format ids we decode. Sniffed from content; everything else is refused with 415.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
SUPPORTED_MEDIA_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
)

# Pillow modes that need more than a plain convert("RGB"); app/images/decode_cost.py prices them.
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Transparent pixels are shown over white, as a browser shows them on a default page.
_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # mode RGB, orientation applied
    format: str
    original_size: tuple[int, int]  # (width, height) as stored in the file


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _too_large(exc: BaseException, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image is too large ({_short(exc)}); the limit is {max_pixels} pixels "
        "(SERVING_MAX_IMAGE_PIXELS)"
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (at twice its MAX_IMAGE_PIXELS) fires inside open(), before ours.
        raise _too_large(exc, max_pixels) from exc
    except UnidentifiedImageError:
        pass
    except Exception as exc:  # a broken header in a supported format
        raise InvalidImageError(f"could not read image header: {_short(exc)}") from exc
    # Not one of ours. Tell "a real image in another format" (415) from "not an image" (400).
    try:
        with Image.open(io.BytesIO(data)) as other:
            found = other.format or "unknown"
    except Exception:
        raise InvalidImageError(
            f"the data is not an image in a supported format ({', '.join(SUPPORTED_FORMATS)})"
        ) from None
    raise UnsupportedImageFormatError(
        f"image format {found} is not supported; send one of {', '.join(SUPPORTED_FORMATS)}"
    )


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255, turning most photos white; scale instead.
    # Written to keep the peak low (no 64-bit copies: a 49 MP image went from 23 to 7 bytes per
    # pixel, bench/results/decode_memory.json) with the same values as the plain formula.
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        scale = 255.0 if peak <= 1.0 else (255.0 / 65535.0 if peak > 255.0 else 1.0)
        out = np.nan_to_num(arr)  # a copy: the arithmetic below is done in place on it
        out *= scale
        np.clip(out, 0, 255, out=out)
    else:
        peak = int(arr.max()) if arr.size else 0
        out = arr >> 8 if peak > 255 else arr
        if out.dtype.kind != "u":  # signed ("I"): negatives and 24-bit values are clipped
            out = np.clip(out, 0, 255)
    return Image.fromarray(out.astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded mode to 8-bit RGB: alpha over white, 16-bit scaled, CMYK/palette converted.
    Never modifies `img`; copies it only where a conversion needs a new image."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _sixteen_bit_to_l(img).convert("RGB")
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        # convert("RGBA") of an RGBA image would only copy it.
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        composed = Image.alpha_composite(background, rgba)
        del background, rgba  # freed before the RGB copy is made: a lower peak
        return composed.convert("RGB")
    return img.convert("RGB")


def draft_size(size: tuple[int, int], target_short_side: int) -> tuple[int, int] | None:
    """The size to ask a JPEG decoder for: keep the short side at least twice the target, so
    the antialiased resize that follows still has real pixels to average. None: decode full."""
    width, height = size
    short = min(width, height)
    floor = 2 * target_short_side
    if short < 2 * floor:  # libjpeg scales by 1/2, 1/4, 1/8: nothing to gain below 2x
        return None
    scale = floor / short
    return (max(1, int(width * scale)), max(1, int(height * scale)))


@dataclass(frozen=True)
class OpenedImage:
    """An image whose header has been read and checked, no pixel decoded yet."""

    image: Image.Image  # not loaded; JPEG draft already requested
    format: str
    mode: str  # the mode the decoder will produce
    size: tuple[int, int]  # (width, height) the decoder will produce (JPEG: after draft)
    original_size: tuple[int, int]  # (width, height) as stored in the file


def open_image(
    data: bytes,
    *,
    max_pixels: int,
    draft_short_side: int | None = None,
) -> OpenedImage:
    """Read and check the header only: format sniffed from the bytes, pixel count within
    `max_pixels`. Cheap, and tells what the decode will cost before any pixel is decoded.

    `draft_short_side`: when set, large JPEGs are decoded at a reduced scale (libjpeg's DCT
    scaling) that keeps the short side at least twice this size: much faster for photographs
    far bigger than the model's input, with no visible effect after the final resize.
    """
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    img = _open(data, max_pixels)
    try:
        fmt = img.format or "unknown"
        width, height = img.size
        if width <= 0 or height <= 0:
            raise InvalidImageError(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"image is {width}x{height} = {width * height} pixels; "
                f"the limit is {max_pixels} (SERVING_MAX_IMAGE_PIXELS)"
            )
        if draft_short_side and fmt == "JPEG":
            requested = draft_size((width, height), draft_short_side)
            if requested is not None:
                img.draft("RGB", requested)
        return OpenedImage(img, fmt, img.mode, img.size, (width, height))
    except (ImageTooLargeError, InvalidImageError):
        img.close()
        raise
    except Exception as exc:
        img.close()
        raise InvalidImageError(f"could not read the image header: {_short(exc)}") from exc


def finish_decode(opened: OpenedImage, *, max_pixels: int) -> DecodedImage:
    """Decode the pixels of an opened image into RGB with EXIF orientation applied. The opened
    image is closed either way; a failure is a client error, never a crash."""
    img, fmt = opened.image, opened.format
    try:
        # Truncated files fail here (Pillow's LOAD_TRUNCATED_IMAGES is left False on purpose).
        img.load()
        # In place: without it, exif_transpose copies every image that needs no rotation.
        ImageOps.exif_transpose(img, in_place=True)
        rgb = to_rgb(img)
        rgb.load()
    except Exception as exc:
        img.close()
        if isinstance(exc, Image.DecompressionBombError):
            raise _too_large(exc, max_pixels) from exc
        if isinstance(exc, MemoryError):
            raise ImageTooLargeError("image needs more memory to decode than allowed") from exc
        # Pillow raises OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError...
        # for corrupt data; all of them mean the same thing to the client.
        raise InvalidImageError(f"could not decode {fmt} image: {_short(exc)}") from exc
    if rgb is not img:
        img.close()  # the caller still holds `opened`: free the decoded source now
    return DecodedImage(image=rgb, format=fmt, original_size=opened.original_size)


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    draft_short_side: int | None = None,
) -> DecodedImage:
    """Decode one image from untrusted bytes into RGB with EXIF orientation applied:
    `open_image` then `finish_decode`."""
    opened = open_image(data, max_pixels=max_pixels, draft_short_side=draft_short_side)
    return finish_decode(opened, max_pixels=max_pixels)
