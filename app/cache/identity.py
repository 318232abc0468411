"""Which model an entry belongs to. Part of every key and checked again inside every value: an
entry written by another model (other weights, precision, backend or preprocessing), by another
release whose entry format changed, or by anything else sharing the Redis, is never served."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

# Bumped whenever the stored value's layout (app/cache/entry.py) or its meaning changes.
ENTRY_FORMAT = 1


@dataclass(frozen=True)
class ModelIdentity:
    model: str  # the architecture, e.g. resnet50
    # ResNet50_Weights.IMAGENET1K_V2, sha256:<the state-dict file's hash>, or random:<seed>
    weights: str
    precision: str  # the dtype the engine runs: float32, bfloat16, int8
    backend: str  # openvino or torch: the same weights give slightly different scores
    preprocessing: dict[str, Any]  # resize, crop, mean, std, resampling filter
    num_classes: int

    def fingerprint(self) -> bytes:
        """16 bytes that differ for any two identities (and entry formats)."""
        text = json.dumps({"format": ENTRY_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).digest()[:16]


def image_key(fingerprint: bytes, image_sha256: str) -> str:
    """The Redis key (and the in-process one): readable prefix, the model, the image."""
    return f"resnet-serving:prediction:{fingerprint.hex()}:{image_sha256}"
