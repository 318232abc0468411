"""Opening the build-time model at start-up: the manifest read, checked against what the
settings ask for, and the IR files checked against the manifest's hashes, before the server
binds its port. Anything amiss stops start-up with one line (exit status 2): a server never
falls back to other weights than the ones configured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.images.preprocess import Preprocessor
from app.model.errors import ModelPackageError
from app.model.ir.manifest import XML, Manifest, file_sha256
from app.model.options import Precision
from app.model.spec import RANDOM, ModelSpec, looks_like_path


@dataclass(frozen=True)
class Wanted:
    """What the settings ask for (SERVING_MODEL_NAME, _WEIGHTS, _PRECISION, _RANDOM_SEED)."""

    model_name: str
    weights: str
    precision: Precision
    random_seed: int


@dataclass(frozen=True)
class ModelPackage:
    directory: Path
    manifest: Manifest
    spec: ModelSpec

    @property
    def xml(self) -> Path:
        return self.directory / XML

    @property
    def quantized(self) -> bool:
        return self.manifest.precision == "int8"


def _weights_differ(manifest: Manifest, wanted: Wanted) -> str | None:
    spec = wanted.weights
    if spec.lower() == RANDOM:
        if manifest.weights_id != RANDOM:
            return f"SERVING_MODEL_WEIGHTS=random, the IR holds {manifest.weights_id}"
        if manifest.random_seed != wanted.random_seed:
            return (
                f"SERVING_RANDOM_SEED={wanted.random_seed}, the IR's random weights were drawn "
                f"with seed {manifest.random_seed}"
            )
        return None
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            return f"SERVING_MODEL_WEIGHTS={spec} is no file; the IR holds {manifest.weights_id}"
        actual = file_sha256(path)
        if actual != manifest.weights_sha256:
            return (
                f"SERVING_MODEL_WEIGHTS={spec} has sha256 {actual[:12]}..., the IR was built "
                f"from {manifest.weights_id} ({(manifest.weights_sha256 or 'random')[:12]}...)"
            )
        return None
    names = {name.upper() for name in manifest.weights_names}
    if spec.upper() not in names and spec.split(".")[-1].upper() not in names:
        return f"SERVING_MODEL_WEIGHTS={spec}, the IR holds {manifest.weights_id}"
    return None


def differences(manifest: Manifest, wanted: Wanted) -> list[str]:
    """Each way the IR is not the configured model, as `SETTING=value, the IR holds ...`."""
    found = []
    if wanted.model_name != manifest.model:
        found.append(f"SERVING_MODEL_NAME={wanted.model_name}, the IR holds {manifest.model}")
    else:
        weights = _weights_differ(manifest, wanted)
        if weights is not None:
            found.append(weights)
    int8_wanted = wanted.precision is Precision.INT8
    if int8_wanted != (manifest.precision == "int8"):
        found.append(
            f"SERVING_PRECISION={wanted.precision.value}, the IR is {manifest.precision}"
            + (" (fp32, bf16 and auto need an fp32 IR)" if not int8_wanted else "")
        )
    return found


def _check_files(directory: Path, manifest: Manifest) -> None:
    for name, expected in sorted(manifest.files.items()):
        path = directory / name
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise ModelPackageError(f"{path} cannot be read: {exc.strerror or exc}") from exc
        if actual != expected:
            raise ModelPackageError(
                f"{path} is damaged: sha256 {actual[:12]}..., its manifest says {expected[:12]}..."
            )


def open_package(directory: Path, wanted: Wanted) -> ModelPackage:
    """The checked package; ModelPackageError with one line when it cannot be served."""
    manifest = Manifest.read(directory)
    found = differences(manifest, wanted)
    if found:
        raise ModelPackageError(
            f"the model in SERVING_MODEL_DIR={directory} is not the configured one: "
            + "; ".join(found)
            + " (build the image for these settings, or set them to the IR's)"
        )
    _check_files(directory, manifest)
    try:
        preprocessor = Preprocessor.from_dict(manifest.preprocessing)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelPackageError(
            f"{directory}/manifest.json is damaged: preprocessing: {type(exc).__name__}: {exc}"
        ) from exc
    random = manifest.weights_id == RANDOM
    spec = ModelSpec(
        model_name=manifest.model,
        weights_id=manifest.weights_id,
        weights_source=RANDOM if random else "ir",
        random_weights=random,
        labels=manifest.labels,
        preprocessor=preprocessor,
        from_ir=True,
    )
    return ModelPackage(directory=directory, manifest=manifest, spec=spec)
