"""The model built at image build time (app/model/ir): what `python -m app.model.ir.build`
writes, how start-up checks it against the settings and against its own hashes, and that the
runtime serves it with the same answers as the model converted in process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from app.images.preprocess import Preprocessor
from app.model.errors import ModelPackageError, WeightsUnavailableError
from app.model.ir.build import build
from app.model.ir.manifest import BIN, MANIFEST, XML, Manifest, file_sha256
from app.model.ir.package import Wanted, differences, open_package
from app.model.options import BackendChoice, Precision
from app.model.runtime import ModelRuntime
from app.model.weights import describe, load_model, resolve_weights
from app.settings.config import Settings
from helpers.images import photo_bytes
from helpers.process import ROOT, app_command, app_process, free_port

MODEL = "resnet18"
WANTED = Wanted(MODEL, "random", Precision.AUTO, 0)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ir") / "model"
    steps = build(MODEL, "random", out, seed=0)
    assert steps[-1].startswith("IR logits within"), steps
    return out


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    """A copy of the built package that a test may damage."""
    return Path(shutil.copytree(built, tmp_path / "model"))


def named(**changes: object) -> Manifest:
    """A manifest of real ImageNet weights, for the weights rules (no files needed)."""
    base = Manifest(
        model="resnet50",
        weights_id="ResNet50_Weights.IMAGENET1K_V2",
        weights_names=("ResNet50_Weights.IMAGENET1K_V2", "IMAGENET1K_V2", "DEFAULT"),
        weights_sha256="ab" * 32,
        weights_source="cache",
        random_seed=None,
        precision="fp32",
        labels=("a", "b"),
        preprocessing={},
        files={XML: "", BIN: ""},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- what the build writes ---------------------------------------------------------------------


def test_build_writes_the_ir_and_a_manifest_that_replaces_torchvisions_metadata(
    built: Path,
) -> None:
    manifest = Manifest.read(built)
    source = resolve_weights(MODEL, "random", allow_download=False)
    spec = describe(source)
    assert manifest.model == MODEL
    assert (manifest.weights_id, manifest.weights_names) == ("random", ("random",))
    assert (manifest.weights_sha256, manifest.random_seed) == (None, 0)
    assert manifest.precision == "fp32"
    assert manifest.labels == spec.labels
    assert len(manifest.labels) == 1000
    assert Preprocessor.from_dict(manifest.preprocessing) == spec.preprocessor
    assert manifest.files == {name: file_sha256(built / name) for name in (XML, BIN)}
    assert {"torch", "torchvision", "openvino"} <= set(manifest.built_with)
    # fp32 weights kept as they are (save_model would compress them to fp16 by default):
    # resnet18's 11.7 M parameters at 4 bytes each.
    assert (built / BIN).stat().st_size > 11_000_000 * 4


def test_named_weights_record_every_name_that_selects_them() -> None:
    from app.model.weights import weights_names

    source = resolve_weights("resnet50", "IMAGENET1K_V1", allow_download=True)
    assert weights_names(source) == ("ResNet50_Weights.IMAGENET1K_V1", "IMAGENET1K_V1")
    default = resolve_weights("resnet50", "DEFAULT", allow_download=True)
    assert "DEFAULT" in weights_names(default)


def test_preprocessing_round_trips_and_refuses_nonsense() -> None:
    pre = describe(resolve_weights("resnet50", "random", allow_download=False)).preprocessor
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    bad = {**pre.to_dict(), "crop_size": 512}
    with pytest.raises(ValueError, match="crop_size"):
        Preprocessor.from_dict(bad)
    with pytest.raises(KeyError):
        Preprocessor.from_dict({**pre.to_dict(), "interpolation": "sinc"})


# --- start-up's checks -------------------------------------------------------------------------


@pytest.mark.parametrize("precision", [Precision.AUTO, Precision.FP32, Precision.BF16])
def test_an_fp32_ir_serves_every_floating_point_precision(
    built: Path, precision: Precision
) -> None:
    package = open_package(built, replace(WANTED, precision=precision))
    assert package.spec.from_ir
    assert package.spec.model_name == MODEL
    assert package.spec.weights_source == "random"
    assert package.spec.random_weights
    assert not package.quantized


@pytest.mark.parametrize(
    ("wanted", "says"),
    [
        (
            replace(WANTED, model_name="resnet50"),
            "SERVING_MODEL_NAME=resnet50, the IR holds resnet18",
        ),
        (replace(WANTED, weights="DEFAULT"), "SERVING_MODEL_WEIGHTS=DEFAULT, the IR holds random"),
        (replace(WANTED, random_seed=7), "SERVING_RANDOM_SEED=7, the IR's random weights were"),
        (replace(WANTED, precision=Precision.INT8), "SERVING_PRECISION=int8, the IR is fp32"),
    ],
)
def test_an_ir_that_is_not_the_configured_model_stops_start_up_in_one_line(
    built: Path, wanted: Wanted, says: str
) -> None:
    with pytest.raises(ModelPackageError) as info:
        open_package(built, wanted)
    message = str(info.value)
    assert says in message
    assert "\n" not in message
    assert isinstance(info.value, WeightsUnavailableError)  # python -m app: exit status 2


@pytest.mark.parametrize(
    "spec", ["DEFAULT", "default", "IMAGENET1K_V2", "ResNet50_Weights.IMAGENET1K_V2"]
)
def test_every_name_of_the_built_weights_matches(spec: str) -> None:
    wanted = Wanted("resnet50", spec, Precision.AUTO, 0)
    assert differences(named(), wanted) == []


def test_other_weights_of_the_same_architecture_do_not_match() -> None:
    wanted = Wanted("resnet50", "IMAGENET1K_V1", Precision.AUTO, 0)
    assert differences(named(), wanted) == [
        "SERVING_MODEL_WEIGHTS=IMAGENET1K_V1, the IR holds ResNet50_Weights.IMAGENET1K_V2"
    ]
    # DEFAULT selects these weights only when the build recorded that they are the default.
    old = named(weights_names=("ResNet50_Weights.IMAGENET1K_V1", "IMAGENET1K_V1"))
    assert differences(old, Wanted("resnet50", "DEFAULT", Precision.AUTO, 0))


def test_a_weights_file_matches_by_its_hash(tmp_path: Path) -> None:
    weights = tmp_path / "mine.pth"
    weights.write_bytes(b"state dict")
    manifest = named(weights_sha256=file_sha256(weights), weights_id="file:mine.pth")
    assert differences(manifest, Wanted("resnet50", str(weights), Precision.AUTO, 0)) == []
    weights.write_bytes(b"other weights")
    (found,) = differences(manifest, Wanted("resnet50", str(weights), Precision.AUTO, 0))
    assert "the IR was built from file:mine.pth" in found
    (found,) = differences(manifest, Wanted("resnet50", "/nowhere/x.pth", Precision.AUTO, 0))
    assert "is no file" in found


def test_an_int8_ir_needs_int8_and_nothing_else() -> None:
    int8 = named(precision="int8")
    assert differences(int8, Wanted("resnet50", "DEFAULT", Precision.INT8, 0)) == []
    (found,) = differences(int8, Wanted("resnet50", "DEFAULT", Precision.AUTO, 0))
    assert found.startswith("SERVING_PRECISION=auto, the IR is int8")


def test_damaged_weights_stop_start_up(copy: Path) -> None:
    data = bytearray((copy / BIN).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / BIN).write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match=r"model\.bin is damaged: sha256"):
        open_package(copy, WANTED)


def test_a_missing_ir_file_stops_start_up(copy: Path) -> None:
    (copy / XML).unlink()
    with pytest.raises(ModelPackageError, match=r"model\.xml cannot be read"):
        open_package(copy, WANTED)


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        (None, "holds no manifest.json"),
        ("{not json", "is damaged"),
        ('{"format": 2}', "has format 2; this server reads 1"),
        ('{"format": 1, "model": "resnet18"}', "is damaged: KeyError"),
        ("[1, 2]", "has format 'list'"),
    ],
)
def test_a_missing_or_malformed_manifest_stops_start_up(
    copy: Path, manifest: str | None, says: str
) -> None:
    if manifest is None:
        (copy / MANIFEST).unlink()
    else:
        (copy / MANIFEST).write_text(manifest)
    with pytest.raises(ModelPackageError, match=says):
        open_package(copy, WANTED)


def test_labels_that_do_not_fit_the_model_fail_the_warm_up(copy: Path) -> None:
    raw = json.loads((copy / MANIFEST).read_text())
    raw["labels"] = raw["labels"][:999]  # the labels are not hashed: the warm-up catches it
    (copy / MANIFEST).write_text(json.dumps(raw))
    runtime = ModelRuntime(open_package(copy, WANTED), num_threads=2)
    with pytest.raises(ValueError, match=r"scores per image for 999 labels"):
        runtime.warm_up([1], 224)


def test_settings_refuse_a_built_model_on_torch() -> None:
    for conflicting in ({"backend": "torch"}, {"device": "cuda"}, {"compile": True}):
        with pytest.raises(ValidationError, match="SERVING_MODEL_DIR"):
            Settings(model_dir="/opt/model", **conflicting)


# --- serving it --------------------------------------------------------------------------------


def test_the_ir_answers_as_the_model_converted_in_process(built: Path) -> None:
    from_ir = ModelRuntime(open_package(built, WANTED), num_threads=2)
    source = resolve_weights(MODEL, "random", allow_download=False)
    converted = ModelRuntime(
        load_model(source, seed=0), num_threads=2, backend=BackendChoice.OPENVINO
    )
    assert (from_ir.info.model_source, converted.info.model_source) == ("ir", "converted")
    assert from_ir.info.backend == "openvino"
    assert from_ir.labels == converted.labels
    batch = np.random.default_rng(1).standard_normal((3, 3, 224, 224)).astype(np.float32)
    np.testing.assert_allclose(from_ir.infer(batch), converted.infer(batch), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_int8_is_calibrated_at_build_time_not_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "int8"
    build(MODEL, "random", out, precision="int8", seed=0)
    assert Manifest.read(out).precision == "int8"
    assert "nncf" in Manifest.read(out).built_with

    from app.model.backends import int8

    def no_calibration(*_: object) -> None:
        raise AssertionError("start-up calibrated a model quantized at build time")

    monkeypatch.setattr(int8, "quantizer", no_calibration)
    package = open_package(out, replace(WANTED, precision=Precision.INT8))
    runtime = ModelRuntime(package, num_threads=2, precision=Precision.INT8)
    assert (runtime.info.dtype, runtime.info.model_source) == ("int8", "ir")
    runtime.warm_up([1, 2], 224)


# --- the server, as the CPU image runs it: no torch to import ----------------------------------


@pytest.mark.slow
def test_a_server_without_torch_serves_the_ir(built: Path, tmp_path: Path) -> None:
    env = {
        "SERVING_MODEL_DIR": str(built),
        "SERVING_MODEL_NAME": MODEL,
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_MAX_BATCH_SIZE": "2",
    }
    with app_process(env, log_path=tmp_path / "app.log", without_torch=True) as app:
        app.wait_ready(120)
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            ready = client.get("/ready").json()
            assert (ready["model_source"], ready["backend"]) == ("ir", "openvino")
            model = client.get("/model").json()
            assert (model["model"], model["weights"], model["model_source"]) == (
                MODEL,
                "random",
                "ir",
            )
            photo = {"file": ("coffee.png", photo_bytes("coffee"), "image/png")}
            answer = client.post("/predict", files=photo)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"]) == 5
            metrics = client.get("/metrics").text
            assert 'model_source="ir"' in metrics
        assert app.terminate() == 0
    assert "No module named 'torch'" not in app.log_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SERVING_MODEL_NAME": "resnet50"}, "SERVING_MODEL_NAME=resnet50, the IR holds resnet18"),
        ({"SERVING_PRECISION": "int8"}, "SERVING_PRECISION=int8, the IR is fp32"),
        ({"SERVING_MODEL_DIR": "/nonexistent"}, "holds no manifest.json"),
    ],
)
def test_a_server_refuses_an_ir_that_is_not_its_model(
    built: Path, env: dict[str, str], says: str
) -> None:
    settings = {
        "SERVING_MODEL_DIR": str(built),
        "SERVING_MODEL_NAME": MODEL,
        "SERVING_MODEL_WEIGHTS": "random",
        **env,
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    done = subprocess.run(
        app_command(without_torch=True),
        env={
            **inherited,
            **settings,
            "SERVING_HOST": "127.0.0.1",
            "SERVING_PORT": str(free_port()),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("resnet-serving: ")
    assert says in line
