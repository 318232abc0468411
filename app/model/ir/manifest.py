"""The manifest of a build-time model: what the OpenVINO IR in SERVING_MODEL_DIR holds, so that
the runtime needs neither torch nor torchvision to serve it, and can tell when it is not the
model the settings ask for.

The directory holds `model.xml` and `model.bin` (`openvino.save_model`, weights kept in fp32 or
quantized to int8) and `manifest.json`: the architecture, the weights (their id, the names that
select them, the sha256 of their file), the precision, the labels, the preprocessing, and the
sha256 of each IR file. `python -m app.model.ir.build` writes it; `app.model.ir.open_package`
reads and checks it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from app.model.errors import ModelPackageError

T = TypeVar("T")

FORMAT = 1
MANIFEST = "manifest.json"
XML = "model.xml"
BIN = "model.bin"
# What an IR may hold: fp32 weights (compiled at start-up to run in fp32 or bf16), or a model
# quantized to int8 at build time (calibrated then: start-up does no calibration).
IR_PRECISIONS = ("fp32", "int8")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _optional(value: Any, kind: Callable[[Any], T]) -> T | None:
    return None if value is None else kind(value)


@dataclass(frozen=True)
class Manifest:
    model: str
    weights_id: str  # ResNet50_Weights.IMAGENET1K_V2, file:<name>.pth or random
    # SERVING_MODEL_WEIGHTS values that select these weights (DEFAULT only if they are the
    # default), compared without regard to case; a path is compared by its file's sha256.
    weights_names: tuple[str, ...]
    weights_sha256: str | None  # of the state-dict file; None for random weights
    weights_source: str  # where the build found them: cache, download, file or random
    random_seed: int | None  # the seed of random weights, else None
    precision: str  # one of IR_PRECISIONS
    labels: tuple[str, ...]
    preprocessing: dict[str, Any]  # Preprocessor.to_dict()
    files: dict[str, str]  # IR file name -> sha256
    built_with: dict[str, str] = field(default_factory=dict)  # package versions, for people
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Raises ModelPackageError when the manifest is missing or malformed."""
        path = directory / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelPackageError(
                f"SERVING_MODEL_DIR={directory} holds no {MANIFEST}: build the image's model "
                "there (python -m app.model.ir.build), or leave SERVING_MODEL_DIR empty to "
                "convert torchvision's model at start-up (needs torch)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelPackageError(f"{path} is damaged: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ModelPackageError(f"{path} has format {found!r}; this server reads {FORMAT}")
        try:
            manifest = cls(
                model=str(raw["model"]),
                weights_id=str(raw["weights_id"]),
                weights_names=tuple(str(n) for n in raw["weights_names"]),
                weights_sha256=_optional(raw["weights_sha256"], str),
                weights_source=str(raw["weights_source"]),
                random_seed=_optional(raw["random_seed"], int),
                precision=str(raw["precision"]),
                labels=tuple(str(label) for label in raw["labels"]),
                preprocessing=dict(raw["preprocessing"]),
                files={str(k): str(v) for k, v in dict(raw["files"]).items()},
                built_with={str(k): str(v) for k, v in dict(raw.get("built_with", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelPackageError(f"{path} is damaged: {type(exc).__name__}: {exc}") from exc
        if manifest.precision not in IR_PRECISIONS or set(manifest.files) != {XML, BIN}:
            found = f"precision {manifest.precision!r}, files {sorted(manifest.files)}"
            raise ModelPackageError(f"{path} is damaged: {found}")
        return manifest

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST
        path.write_text(self.to_json(), encoding="utf-8")
        return path
