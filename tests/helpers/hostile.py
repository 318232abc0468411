"""A corpus of hostile and odd images, generated (nothing downloaded): malformed headers,
decompression bombs in every supported container, oversized metadata, animations with
thousands of frames, and colour-mode oddities."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, TiffImagePlugin

from helpers.images import encode, photo, png_with_header_size


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_zero_bomb(width: int, height: int) -> bytes:
    """A real, valid grayscale PNG of zeros: tiny on the wire, width*height bytes decoded."""
    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    body = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def png_bad_crc() -> bytes:
    good = encode(Image.new("RGB", (8, 8)), "PNG")
    return good[:29] + b"\x00\x00\x00\x00" + good[33:]  # IHDR's CRC zeroed


def png_huge_exif_chunk() -> bytes:
    good = encode(photo("chelsea").resize((64, 48)), "PNG")
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + b"\xff" * (2 * 1024 * 1024)
    return good[:-12] + _png_chunk(b"eXIf", exif) + good[-12:]


def png_palette_index_out_of_range() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0)
    plte = b"\x00\x00\x00\xff\xff\xff"  # two colours
    pixels = zlib.compress(b"".join(b"\x00" + bytes([0, 1, 200, 255]) for _ in range(4)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"PLTE", plte)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def png_zero_size() -> bytes:
    return png_with_header_size(0, 0)


def gif_screen_bomb() -> bytes:
    """GIF whose logical screen claims 65535x65535, with one tiny frame."""
    good = encode(Image.new("P", (2, 2)), "GIF")
    return good[:6] + struct.pack("<HH", 65535, 65535) + good[10:]


def gif_thousands_of_frames(frames: int = 3000) -> bytes:
    """Distinct frames (Pillow would merge identical ones), each a different noise pattern."""
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").convert("P")
        for _ in range(frames)
    ]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=1, loop=0)


def gif_truncated_header() -> bytes:
    return b"GIF89a\x10\x00"


def tiff_dimension_bomb() -> bytes:
    img = Image.new("L", (8, 8))
    info = TiffImagePlugin.ImageFileDirectory_v2()
    buf = io.BytesIO()
    img.save(buf, format="TIFF", tiffinfo=info)
    data = bytearray(buf.getvalue())
    # Rewrite ImageWidth (256) and ImageLength (257) in the first IFD to 100000.
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = struct.pack(
                order + ("H" if kind == 3 else "I"), 100_000 if kind != 3 else 65535
            )
            data[entry + 8 : entry + 8 + len(value)] = value
    return bytes(data)


def tiff_bad_ifd_offset() -> bytes:
    return b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\x00" * 32


def tiff_many_pages(pages: int = 500) -> bytes:
    frames = [Image.new("L", (2, 2), i % 256) for i in range(pages)]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def tiff_cmyk() -> bytes:
    return encode(photo("coffee").convert("CMYK"), "TIFF")


def tiff_float() -> bytes:
    arr = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    return encode(Image.fromarray(arr, mode="F"), "TIFF")


def webp_dimension_bomb() -> bytes:
    """A lossless WebP whose VP8L header claims 16384x16384 (the format's maximum)."""
    good = bytearray(encode(Image.new("RGB", (8, 8)), "WEBP", lossless=True))
    vp8l = good.index(b"VP8L") + 8  # chunk payload: signature byte, then 14+14 bit sizes
    bits = (16383) | (16383 << 14)
    good[vp8l + 1 : vp8l + 5] = struct.pack(
        "<I", bits | (int.from_bytes(good[vp8l + 1 : vp8l + 5], "little") & ~((1 << 28) - 1))
    )
    return bytes(good)


def webp_bad_riff_length() -> bytes:
    good = bytearray(encode(Image.new("RGB", (8, 8)), "WEBP"))
    good[4:8] = struct.pack("<I", 0xFFFFFFF0)
    return bytes(good)


def jpeg_garbage_after_soi() -> bytes:
    return b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 8


def jpeg_huge_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate, so the EXIF is really used
    exif[0x927C] = b"M" * 60_000  # MakerNote: the APP1 segment near its 64 KB limit
    exif[0x010E] = "x" * 2000  # ImageDescription
    return encode(photo("chelsea"), "JPEG", quality=80, exif=exif)


def jpeg_cmyk_adobe() -> bytes:
    return encode(photo("chelsea").convert("CMYK"), "JPEG", quality=90)


def jpeg_progressive_large() -> bytes:
    return encode(photo("coffee").resize((3000, 2000)), "JPEG", quality=85, progressive=True)


def bmp_huge_header() -> bytes:
    good = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
    good[18:26] = struct.pack("<ii", 200_000, 200_000)
    return bytes(good)


def bmp_one_bit() -> bytes:
    return encode(photo("chelsea").convert("1"), "BMP")


def png_sixteen_bit_rgb() -> bytes:
    arr = (np.asarray(photo("chelsea"), dtype=np.uint16) * 257).astype(">u2")
    height, width, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def png_la_mode() -> bytes:
    return encode(photo("chelsea").convert("LA"), "PNG")


# name -> (maker, statuses it may get). 200 where the file is a real (if odd) image.
CORPUS: dict[str, tuple[Callable[[], bytes], frozenset[int]]] = {
    "png header 100000x100000": (lambda: png_with_header_size(100_000, 100_000), frozenset({413})),
    "png real zero bomb 12000x12000": (lambda: png_zero_bomb(12_000, 12_000), frozenset({413})),
    "png zero bomb just under the limit": (lambda: png_zero_bomb(5_000, 5_000), frozenset({200})),
    "png bad crc": (png_bad_crc, frozenset({400})),
    "png 2 MB eXIf chunk": (png_huge_exif_chunk, frozenset({200})),
    "png palette index out of range": (png_palette_index_out_of_range, frozenset({200})),
    "png zero size": (png_zero_size, frozenset({400})),
    "png 16-bit rgb": (png_sixteen_bit_rgb, frozenset({200})),
    "png LA": (png_la_mode, frozenset({200})),
    "gif screen 65535x65535": (gif_screen_bomb, frozenset({413})),
    "gif 3000 frames": (gif_thousands_of_frames, frozenset({200})),
    "gif truncated header": (gif_truncated_header, frozenset({400})),
    "tiff 100000 wide": (tiff_dimension_bomb, frozenset({413})),
    "tiff bad IFD offset": (tiff_bad_ifd_offset, frozenset({400})),
    "tiff 500 pages": (tiff_many_pages, frozenset({200})),
    "tiff cmyk": (tiff_cmyk, frozenset({200})),
    "tiff float": (tiff_float, frozenset({200})),
    "webp 16383x16383 header": (webp_dimension_bomb, frozenset({413})),
    "webp bad RIFF length": (webp_bad_riff_length, frozenset({400})),
    "jpeg garbage after SOI": (jpeg_garbage_after_soi, frozenset({400})),
    "jpeg 60 KB EXIF": (jpeg_huge_exif, frozenset({200})),
    "jpeg cmyk": (jpeg_cmyk_adobe, frozenset({200})),
    "jpeg progressive 6 MP": (jpeg_progressive_large, frozenset({200})),
    "bmp header 200000x200000": (bmp_huge_header, frozenset({413})),
    "bmp 1-bit": (bmp_one_bit, frozenset({200})),
    "one byte": (lambda: b"\xff", frozenset({400})),
    "html": (lambda: b"<!doctype html><html><body>hi</body></html>", frozenset({400})),
    "svg": (
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>',
        frozenset({400}),
    ),
}
