"""Settings: the SERVING_ prefix, validation, and one-line errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings.config import LogFormat, Settings, describe_validation_error
from helpers.process import run_app


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from(monkeypatch)
    assert (s.host, s.port, s.model_name, s.model_weights) == (
        "0.0.0.0",
        8000,
        "resnet50",
        "DEFAULT",
    )
    assert s.top_k == 5
    assert s.allow_private_urls is False
    assert s.log_format is LogFormat.JSON


def test_values_come_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from(
        monkeypatch,
        SERVING_PORT="9000",
        SERVING_MODEL_NAME="ResNet18",
        SERVING_TOP_K="3",
        SERVING_ALLOW_PRIVATE_URLS="true",
        SERVING_URL_ALLOWED_NETWORKS="10.0.0.0/8, 192.168.1.0/24",
        SERVING_LOG_LEVEL="DEBUG",
    )
    assert s.port == 9000
    assert s.model_name == "resnet18"
    assert s.top_k == 3
    assert s.allow_private_urls is True
    assert s.url_allowed_networks == ["10.0.0.0/8", "192.168.1.0/24"]
    assert s.log_level.value == "debug"


def test_unprefixed_env_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from(monkeypatch, PORT="1234").port == 8000


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("SERVING_PORT", "eighty", "SERVING_PORT='eighty'"),
        ("SERVING_TOP_K", "50", "SERVING_TOP_K='50'"),
        ("SERVING_MODEL_NAME", "resnet9000", "unknown torchvision classification model"),
        ("SERVING_LOG_FORMAT", "xml", "SERVING_LOG_FORMAT='xml'"),
        ("SERVING_URL_ALLOWED_NETWORKS", "10.0.0.0/33", "not a CIDR"),
        ("SERVING_MODEL_WEIGHTS", "  ", "must not be empty"),
        ("SERVING_MODEL_VERSION", "v 2", "SERVING_MODEL_VERSION='v 2'"),
        ("SERVING_MODEL_VERSION", "", "must be 1-32 characters"),
    ],
)
def test_bad_values_give_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)
    line = describe_validation_error(info.value)
    assert "\n" not in line
    assert line.startswith("invalid configuration: ")
    assert fragment in line
    assert env in line


# --- SERVING_MODEL_VERSION -------------------------------------------------------------------


@pytest.mark.parametrize(
    "label", ["v1", "2", "canary", "v2.1-rc_3", "2024-06-01", "A" * 32, " v2 "]
)
def test_model_version_labels_that_are_accepted(
    monkeypatch: pytest.MonkeyPatch, label: str
) -> None:
    assert settings_from(monkeypatch, SERVING_MODEL_VERSION=label).model_version == label.strip()


def test_model_version_defaults_to_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from(monkeypatch).model_version == "v1"


@pytest.mark.parametrize(
    "label",
    ["", "   ", "A" * 33, "-v1", ".v1", "_v1", "v1/2", "v 1", "v1:2", 'v"1', "vé", "v\n1"],
)
def test_model_version_labels_that_are_refused(monkeypatch: pytest.MonkeyPatch, label: str) -> None:
    monkeypatch.setenv("SERVING_MODEL_VERSION", label)
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)
    line = describe_validation_error(info.value)
    assert "SERVING_MODEL_VERSION" in line
    assert "must be 1-32 characters" in line


def test_a_bad_model_version_stops_start_up_with_exit_2() -> None:
    result = run_app({"SERVING_MODEL_VERSION": "v1/../2", "SERVING_MODEL_WEIGHTS": "random"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "SERVING_MODEL_VERSION='v1/../2'" in lines[0]
