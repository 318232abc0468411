"""app/model/bake.py: what the Dockerfile's weights stage puts into torch's cache."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from torchvision.models import WeightsEnum

from app.model import bake as weights_bake
from app.model.weights import WeightsUnavailableError, resolve_weights


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_random_bakes_nothing(torch_home: Path) -> None:
    assert "random weights" in weights_bake.bake("resnet50", "random")
    assert not torch_home.exists()


def test_a_name_without_a_local_file_is_downloaded_with_its_hash_checked(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_get_state_dict(self: WeightsEnum, **kwargs: Any) -> dict[str, Any]:
        calls.append({"weights": str(self), **kwargs})
        return {}

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    message = weights_bake.bake("resnet50", "DEFAULT", local_dir=torch_home.parent / "absent")
    assert calls == [
        {"weights": "ResNet50_Weights.IMAGENET1K_V2", "progress": False, "check_hash": True}
    ]
    assert "downloaded from https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message


def test_a_local_file_with_the_right_hash_lands_where_the_app_looks(
    tmp_path: Path, torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"a state dict stand-in"
    digest = hashlib.sha256(payload).hexdigest()
    # torchvision names its files <arch>-<first hex digits of the sha256>.pth.
    name = f"resnet50-{digest[:8]}.pth"
    monkeypatch.setattr(weights_bake, "file_name", lambda _w: name)
    local = tmp_path / "weights"
    local.mkdir()
    (local / "my-download.pth").write_bytes(payload)
    message = weights_bake.bake("resnet50", "DEFAULT", local_dir=local)
    assert f"sha256 {digest[:12]}... checked" in message
    assert (torch_home / name).read_bytes() == payload


def test_a_local_file_with_the_wrong_hash_fails_the_build(tmp_path: Path, torch_home: Path) -> None:
    local = tmp_path / "weights"
    local.mkdir()
    (local / "resnet50-11ad3fa6.pth").write_bytes(b"not the published weights")
    with pytest.raises(weights_bake.BakeError, match=r"is not ResNet50_Weights\.IMAGENET1K_V2"):
        weights_bake.bake("resnet50", "DEFAULT", local_dir=local)
    assert not (torch_home / "resnet50-11ad3fa6.pth").exists()
    # and the app would not have found anything there either
    with pytest.raises(WeightsUnavailableError, match="is not in torch's cache"):
        resolve_weights("resnet50", "DEFAULT", allow_download=False)


def test_several_candidate_files_are_refused(tmp_path: Path, torch_home: Path) -> None:
    local = tmp_path / "weights"
    local.mkdir()
    (local / "a.pth").write_bytes(b"a")
    (local / "b.pth").write_bytes(b"b")
    with pytest.raises(weights_bake.BakeError, match="several weights files"):
        weights_bake.bake("resnet50", "DEFAULT", local_dir=local)


def test_the_command_line_reports_one_line_and_exit_status(
    tmp_path: Path, torch_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert weights_bake.main(["resnet50", "random"]) == 0
    local = tmp_path / "weights"
    local.mkdir()
    (local / "resnet50-11ad3fa6.pth").write_bytes(b"wrong")
    assert weights_bake.main(["resnet50", "DEFAULT", "--from", str(local)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("weights_bake: ")
