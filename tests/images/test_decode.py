"""Decoding untrusted bytes: every supported format and mode, orientation, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.errors import (
    EmptyImageError,
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedImageFormatError,
)
from app.images.decode import decode_image, draft_size, finish_decode, open_image, to_rgb
from helpers.images import (
    encode,
    jpeg_with_orientation,
    photo,
    png_with_header_size,
    sixteen_bit,
    truncated,
)

MAX_PIXELS = 50_000_000


def decode(data: bytes, **kwargs: object) -> Image.Image:
    return decode_image(data, max_pixels=MAX_PIXELS, **kwargs).image  # type: ignore[arg-type]


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 3.0),
        ("PNG", {}, 0.0),
        ("WEBP", {"lossless": True}, 0.0),
        ("BMP", {}, 0.0),
        ("TIFF", {}, 0.0),
        ("GIF", {}, 12.0),  # a 256-colour palette
    ],
)
def test_every_supported_format_decodes_to_the_same_picture(
    fmt: str, params: dict[str, object], tolerance: float
) -> None:
    original = photo("chelsea")
    result = decode_image(encode(original, fmt, **params), max_pixels=MAX_PIXELS)
    assert result.format == fmt
    assert result.image.mode == "RGB"
    assert result.image.size == original.size
    assert mean_abs_diff(result.image, original) <= tolerance


def test_gif_uses_the_first_frame_of_an_animation() -> None:
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    blue = Image.new("RGB", (32, 32), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue] * 50, duration=10)
    out = np.asarray(decode(data))
    assert out[..., 0].mean() > 200
    assert out[..., 2].mean() < 50


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = photo("chelsea").convert("L")
    out = np.asarray(decode(encode(gray, "PNG")))
    assert out.shape[2] == 3
    assert np.array_equal(out[..., 0], np.asarray(gray))
    assert np.array_equal(out[..., 0], out[..., 2])


def test_palette_image_keeps_its_colours() -> None:
    original = photo("chelsea")
    palette = original.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    out = decode(encode(palette, "PNG"))
    assert mean_abs_diff(out, palette.convert("RGB")) == 0.0


def test_transparent_pixels_are_shown_over_white() -> None:
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 8, 16))  # left half opaque blue
    out = np.asarray(decode(encode(rgba, "PNG")))
    assert tuple(out[0, 0]) == (0, 0, 255)
    assert tuple(out[0, 15]) == (255, 255, 255)


def test_transparent_palette_png_is_composited_too() -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 4, 8))
    data = encode(img, "PNG", transparency=0)
    out = np.asarray(decode(data))
    assert tuple(out[0, 0]) == (0, 255, 0)
    assert tuple(out[0, 7]) == (255, 255, 255)


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    original = photo("chelsea")
    out = decode(encode(original.convert("CMYK"), "JPEG", quality=95))
    assert out.mode == "RGB"
    assert mean_abs_diff(out, original) < 6.0


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_image_is_scaled_not_clipped(fmt: str) -> None:
    gray = photo("chelsea").convert("L")
    out = np.asarray(decode(sixteen_bit(gray, fmt)))[..., 0].astype(np.int16)
    # Clipping at 255 would make almost everything white; scaling keeps the picture.
    assert np.abs(out - np.asarray(gray, np.int16)).max() <= 1


def test_float_image_in_unit_range_is_scaled() -> None:
    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    out = np.asarray(to_rgb(Image.fromarray(arr, mode="F")))
    assert out[..., 0].min() == 0
    assert out[..., 0].max() == 255


RED, BLUE, YELLOW, MAGENTA = (255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)


@pytest.mark.parametrize(
    ("orientation", "expected_size", "top_left"),
    [
        (1, (40, 20), RED),  # as stored
        (3, (40, 20), MAGENTA),  # rotated 180: the bottom-right corner comes to the top-left
        (6, (20, 40), YELLOW),  # turned 90 clockwise: the bottom-left comes to the top-left
        (8, (20, 40), BLUE),  # turned 90 anticlockwise: the top-right comes to the top-left
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, expected_size: tuple[int, int], top_left: tuple[int, int, int]
) -> None:
    img = Image.new("RGB", (40, 20), (0, 255, 0))
    img.paste(RED, (0, 0, 10, 10))
    img.paste(BLUE, (30, 0, 40, 10))
    img.paste(YELLOW, (0, 10, 10, 20))
    img.paste(MAGENTA, (30, 10, 40, 20))
    out = decode(jpeg_with_orientation(img, orientation))
    assert out.size == expected_size
    pixel = np.asarray(out)[2, 2].astype(int)
    assert np.abs(pixel - np.array(top_left)).max() < 40


def test_zero_bytes_is_an_empty_image_error() -> None:
    with pytest.raises(EmptyImageError):
        decode(b"")


def test_text_is_not_an_image() -> None:
    with pytest.raises(InvalidImageError):
        decode(b"hello, this is a text file pretending to be a JPEG\n" * 10)


@pytest.mark.parametrize(("fmt", "keep"), [("JPEG", 0.5), ("PNG", 0.3)])
def test_truncated_file_is_refused_not_padded(fmt: str, keep: float) -> None:
    data = encode(photo("chelsea"), fmt)
    with pytest.raises(InvalidImageError):
        decode(truncated(data, keep))


def test_header_claiming_huge_dimensions_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode(png_with_header_size(100_000, 100_000))


def test_header_over_our_limit_but_under_pillows_names_the_size() -> None:
    with pytest.raises(ImageTooLargeError, match="8000x8000"):
        decode_image(png_with_header_size(8000, 8000), max_pixels=1_000_000)


def test_open_image_reads_the_header_only() -> None:
    data = encode(photo("chelsea"), "PNG")
    idat = data.index(b"IDAT") + 4
    corrupt = data[:idat] + bytes(b ^ 0x5A for b in data[idat : idat + 200]) + data[idat + 200 :]
    opened = open_image(corrupt, max_pixels=MAX_PIXELS)  # pixels untouched: no error yet
    assert (opened.format, opened.mode, opened.size) == ("PNG", "RGB", (451, 300))
    with pytest.raises(InvalidImageError):
        finish_decode(opened, max_pixels=MAX_PIXELS)


def test_jpeg_draft_is_known_from_the_header() -> None:
    opened = open_image(
        encode(photo("coffee").resize((4000, 3000)), "JPEG"), max_pixels=10**8, draft_short_side=256
    )
    assert opened.original_size == (4000, 3000)
    assert opened.size == (1000, 750)  # what the decoder will produce, and the budget counts
    opened.image.close()


def test_conversions_leave_the_decoded_image_alone() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    before = rgba.tobytes()
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # fully transparent: white
    assert rgba.tobytes() == before


def test_pixel_limit_is_the_configured_one() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    assert decode_image(data, max_pixels=10_000).image.size == (100, 100)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=9_999)


def test_real_image_in_an_unsupported_format_is_415() -> None:
    data = encode(Image.new("RGB", (32, 32)), "ICO")
    with pytest.raises(UnsupportedImageFormatError, match="ICO"):
        decode(data)


def test_draft_mode_shrinks_big_jpegs_but_keeps_enough_pixels() -> None:
    big = photo("chelsea").resize((3000, 2000))
    data = encode(big, "JPEG", quality=90)
    full = decode(data)
    drafted = decode(data, draft_short_side=232)
    assert full.size == (3000, 2000)
    assert min(drafted.size) >= 2 * 232
    assert drafted.size[0] < 3000


def test_draft_size_leaves_small_images_alone() -> None:
    assert draft_size((600, 500), 232) is None
    assert draft_size((4000, 3000), 232) == (618, 464)
