"""What is kept for one image: every class's probability (so any top_k, and the protocol's whole
score rows, come from it), and the format and size its decode found (/predict reports them).
Never the image's bytes.

In Redis it is one binary value, checked whole before use: a value that is truncated, written
by another model, another entry format, or something else entirely is refused
(`BadEntryError`, a miss), never served and never a 5xx.

    b"RSPC" | format version: u8 | model fingerprint: 16 bytes | classes: u32 | width: u32 |
    height: u32 | image format length: u8 | image format (ASCII) | probabilities: f32 LE
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.cache.identity import ENTRY_FORMAT

MAGIC = b"RSPC"
_HEADER = struct.Struct("<4sB16sIIIB")
_MAX_FORMAT_LENGTH = 16
# What an in-process entry costs beyond its scores: the key string, the OrderedDict node, the
# dataclass and the array's header (sys.getsizeof, measured with CPython 3.11 and numpy 2).
IN_PROCESS_OVERHEAD = 480


class BadEntryError(ValueError):
    """A stored value that is not an entry of this model: served as a miss."""


@dataclass(frozen=True)
class CachedScores:
    probabilities: npt.NDArray[np.float32]  # one row, every class, read-only
    image_format: str
    image_size: tuple[int, int]

    @classmethod
    def of(
        cls, probabilities: npt.NDArray[np.float32], image_format: str, image_size: tuple[int, int]
    ) -> CachedScores:
        row = np.array(probabilities, dtype=np.float32, copy=True).reshape(-1)
        row.flags.writeable = False  # shared by every request that hits it
        return cls(row, image_format, (int(image_size[0]), int(image_size[1])))

    @property
    def held_bytes(self) -> int:
        """What it holds in process, for the LRU's byte bound."""
        return int(self.probabilities.nbytes) + len(self.image_format) + IN_PROCESS_OVERHEAD


def encode(entry: CachedScores, fingerprint: bytes) -> bytes:
    image_format = entry.image_format.encode("ascii")
    width, height = entry.image_size
    header = _HEADER.pack(MAGIC, ENTRY_FORMAT, fingerprint, entry.probabilities.shape[0],
                          width, height, len(image_format))  # fmt: skip
    return header + image_format + entry.probabilities.astype("<f4", copy=False).tobytes()


def decode(raw: bytes, fingerprint: bytes, num_classes: int) -> CachedScores:
    """The entry in `raw`, or BadEntryError saying what is wrong with it."""
    if len(raw) < _HEADER.size:
        raise BadEntryError(f"{len(raw)} bytes: shorter than an entry's header")
    magic, version, owner, classes, width, height, format_length = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise BadEntryError("not a prediction entry (no RSPC mark)")
    if version != ENTRY_FORMAT:
        raise BadEntryError(f"entry format {version}, this server reads {ENTRY_FORMAT}")
    if owner != fingerprint:
        raise BadEntryError("written for another model")
    if classes != num_classes:
        raise BadEntryError(f"{classes} classes, the model has {num_classes}")
    if not 0 < format_length <= _MAX_FORMAT_LENGTH:
        raise BadEntryError("bad image format length")
    start = _HEADER.size + format_length
    if len(raw) != start + 4 * classes:
        raise BadEntryError(
            f"{len(raw)} bytes, an entry of {classes} classes has {start + 4 * classes}"
        )
    try:
        image_format = raw[_HEADER.size : start].decode("ascii")
    except UnicodeDecodeError:
        raise BadEntryError("image format is not ASCII") from None
    row = np.frombuffer(raw, dtype="<f4", offset=start, count=classes).astype(np.float32)
    if not np.all(np.isfinite(row)) or row.min() < 0.0 or row.max() > 1.0:
        raise BadEntryError("scores that are not probabilities")
    return CachedScores.of(row, image_format, (width, height))
