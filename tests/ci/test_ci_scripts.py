"""The helper scripts the build job's image smoke test runs (.github/scripts), exercised here on
real inputs: the golden-prediction check and the photo extraction. (The e2e job runs the
tests/e2e suite itself: no helper script of its own.) And scripts/test.sh, the test job's
command, run against fake ruff, mypy and pytest: every check runs, the failed ones are named."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / ".github" / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ci_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_prediction = load_script("check_prediction")
sample_photo = load_script("sample_photo")

GOOD = {
    "model": "resnet50",
    "weights": "ResNet50_Weights.IMAGENET1K_V2",
    "predictions": [
        {"label": label, "class_id": i, "score": 0.1}
        for i, label in enumerate(["military uniform", "suit", "Windsor tie", "bow tie", "cloak"])
    ],
}


# --- check_prediction ------------------------------------------------------------------------


def test_check_prediction_accepts_the_expected_class_in_the_top_k(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(GOOD))
    assert check_prediction.main([str(path), "--expect", "military uniform", "--top", "5"]) == 0
    assert check_prediction.main([str(path), "--count", "5"]) == 0


@pytest.mark.parametrize(
    ("response", "args"),
    [
        (GOOD, ["--expect", "tabby"]),  # wrong class
        (GOOD, ["--expect", "cloak", "--top", "3"]),  # right class, too far down
        (GOOD, ["--count", "3"]),  # top_k not applied
        ({**GOOD, "weights": "random"}, []),  # random weights are no proof
        ({"error": {"code": "not_ready"}}, []),  # no predictions at all
    ],
)
def test_check_prediction_rejects(
    tmp_path: Path, response: dict[str, Any], args: list[str]
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(response))
    assert check_prediction.main([str(path), *args]) == 1


def test_check_prediction_rejects_non_json(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("<html>502 Bad Gateway</html>")
    assert check_prediction.main([str(path)]) == 1


# --- sample_photo ----------------------------------------------------------------------------


def test_sample_photo_writes_grace_hopper(tmp_path: Path) -> None:
    out = tmp_path / "photo.jpg"
    assert sample_photo.main([str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\xff\xd8")
    from PIL import Image

    with Image.open(out) as image:
        assert image.format == "JPEG"
        assert min(image.size) >= 200


def test_sample_photo_reads_the_hash_locked_pin(tmp_path: Path) -> None:
    lock = tmp_path / "dev-pypi.txt"
    hashes = ["a" * 64, "b" * 64]
    lock.write_text(
        "numpy==2.4.6 \\\n    --hash=sha256:" + "c" * 64 + "\n    # via matplotlib\n"
        "matplotlib==9.9.9 \\\n"
        f"    --hash=sha256:{hashes[0]} \\\n    --hash=sha256:{hashes[1]}\n"
        "    # via resnet-serving (pyproject.toml)\n"
    )
    assert sample_photo.pinned_matplotlib(lock) == ("9.9.9", hashes)
    # An installed matplotlib of another version is not used: the wheel would be downloaded.
    assert sample_photo.from_installed("9.9.9") is None
    # A pin without hashes is not enough: the download is hash-checked.
    lock.write_text("numpy==2.4.6\nmatplotlib==9.9.9\n")
    with pytest.raises(SystemExit):
        sample_photo.pinned_matplotlib(lock)


def test_sample_photo_pin_is_the_locked_matplotlib() -> None:
    version, hashes = sample_photo.pinned_matplotlib(ROOT / "requirements" / "dev-pypi.txt")
    assert version == metadata.version("matplotlib")
    assert hashes


# --- scripts/test.sh -------------------------------------------------------------------------

TOOLS = ("ruff", "mypy", "pytest")


def run_test_sh(tmp_path: Path, fail: set[str], *args: str) -> tuple[int, str, list[str]]:
    """Runs a copy of scripts/test.sh in a checkout-like dir whose .venv/bin holds fake ruff,
    mypy and pytest: each records its arguments and exits 1 when its name (`ruff check`,
    `ruff format`, `mypy`, `pytest`) is in `fail`. Returns the exit status, the output and the
    recorded runs."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    script = repo / "scripts" / "test.sh"
    script.write_text((ROOT / "scripts" / "test.sh").read_text())
    script.chmod(0o755)
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "ran.log"
    for tool in TOOLS:
        failing = sorted(name for name in fail if name.split()[0] == tool)
        # The tool and its first argument decide: `ruff check` fails, `ruff format` passes.
        cases = "".join(f'  "{name}"|"{name} "*) exit 1 ;;\n' for name in failing)
        fake = bin_dir / tool
        fake.write_text(
            f'#!/bin/sh\necho {tool} "$@" >>"{log}"\n'
            f'case "{tool}${{1:+ $1}}" in\n{cases}esac\nexit 0\n'
        )
        fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    ran = log.read_text().splitlines() if log.exists() else []
    return result.returncode, result.stdout + result.stderr, ran


def failed_checks(output: str) -> list[str]:
    return [line.removeprefix("==> FAILED: ") for line in output.splitlines() if "FAILED:" in line]


def test_test_sh_runs_every_check_and_passes_the_arguments_to_pytest(tmp_path: Path) -> None:
    rc, output, ran = run_test_sh(tmp_path, set(), "-m", "not slow")
    assert rc == 0, output
    assert ran == ["ruff check .", "ruff format --check .", "mypy", "pytest -m not slow"]
    assert failed_checks(output) == []
    assert "all checks passed" in output


@pytest.mark.parametrize(
    "fail",
    [{"ruff check"}, {"ruff format"}, {"mypy"}, {"pytest"}, {"ruff check", "mypy", "pytest"}],
)
def test_test_sh_goes_on_after_a_failing_check_and_names_it(tmp_path: Path, fail: set[str]) -> None:
    rc, output, ran = run_test_sh(tmp_path, fail)
    assert rc != 0, output
    # The checks after the failing one still ran (a ruff finding does not hide mypy's).
    assert ran == ["ruff check .", "ruff format --check .", "mypy", "pytest"]
    assert sorted(failed_checks(output)) == sorted(fail)
    assert "all checks passed" not in output
