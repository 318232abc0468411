"""Secrets are never echoed: not in the start-up line for an invalid setting, not in stdout,
stderr or the JSON logs of a server whose clients send keys where they do not belong.

Which settings are secret follows from their type (any pydantic secret type), so the rule holds
for a secret added later."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
from pydantic import Field, SecretBytes, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.settings.config import Settings, describe_validation_error
from app.settings.errors import describe_validation_error as describe_for
from app.settings.errors import secret_fields
from helpers.images import photo_bytes
from helpers.process import ManagedProcess, app_process, run_app

GOOD_A = "good-key-AAAA-0123456789"
GOOD_B = "good-key-BBBB-9876543210"


def key_material(value: str) -> list[str]:
    """The whole value and every comma-separated item in it."""
    return [v for v in {value, *(p.strip() for p in value.split(","))} if len(v) >= 3]


BAD_KEYS = {
    "one short key": "short-key-1",
    "a short key among good ones": f"{GOOD_A},tiny-secret-2,{GOOD_B}",
    "only commas": " , ,, ",
    "a space inside": "good key with a space 12345",
    "non-ASCII": "ключ-ключ-ключ-ключ-ключ",
    "a control character": "tab\tinside-a-long-enough-key",
}


def startup_line(monkeypatch: pytest.MonkeyPatch, value: str) -> str:
    monkeypatch.setenv("SERVING_API_KEYS", value)
    monkeypatch.setenv("SERVING_MODEL_NAME", "resnet18")
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)
    return describe_validation_error(info.value)


@pytest.mark.parametrize("value", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_invalid_keys_are_named_never_shown(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    line = startup_line(monkeypatch, value)
    assert "SERVING_API_KEYS" in line
    assert "value not shown" in line
    for secret in key_material(value):
        assert secret not in line, (secret, line)


def test_other_settings_still_show_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVING_PORT", "eighty")
    line = startup_line(monkeypatch, "short-key-1")
    assert "SERVING_PORT='eighty'" in line
    assert "short-key-1" not in line


class FutureSettings(BaseSettings):
    """A later version of the settings, with more secrets of other shapes."""

    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore")
    db_password: SecretStr = Field(min_length=12)
    webhook_token: SecretStr | None = None
    signing_keys: Annotated[list[SecretBytes], NoDecode] = Field(default_factory=list)
    region: str = Field("eu", pattern=r"^[a-z]{2}$")

    @field_validator("webhook_token")
    @classmethod
    def _careless(cls, value: SecretStr | None) -> SecretStr | None:
        # A careless validator that quotes the secret in its message: still masked.
        if value is not None and not value.get_secret_value().startswith("whk_"):
            raise ValueError(f"{value.get_secret_value()!r} does not start with whk_")
        return value


def test_the_rule_is_the_field_type_not_a_name_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert secret_fields(Settings) == {"api_keys", "cache_redis_url", "cache_redis_password"}
    assert secret_fields(FutureSettings) == {"db_password", "webhook_token", "signing_keys"}
    monkeypatch.setenv("SERVING_DB_PASSWORD", "hunter2-pw")
    monkeypatch.setenv("SERVING_WEBHOOK_TOKEN", "NOT-A-VALID-TOKEN")
    monkeypatch.setenv("SERVING_SIGNING_KEYS", "[1, 2]")
    monkeypatch.setenv("SERVING_REGION", "Europe")
    with pytest.raises(ValidationError) as info:
        FutureSettings(_env_file=None)
    line = describe_for(info.value, FutureSettings, "SERVING_")
    for name in ("SERVING_DB_PASSWORD", "SERVING_WEBHOOK_TOKEN", "SERVING_SIGNING_KEYS"):
        assert name in line
    for secret in ("hunter2-pw", "NOT-A-VALID-TOKEN"):
        assert secret not in line, line
    assert "SERVING_REGION='Europe'" in line  # not a secret: shown, as before


# --- the processes: every byte they write ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "value",
    [BAD_KEYS["a short key among good ones"], BAD_KEYS["only commas"], BAD_KEYS["non-ASCII"]],
    ids=["short among good", "only commas", "non-ASCII"],
)
def test_start_up_with_bad_keys_prints_no_key(value: str) -> None:
    result = run_app(
        {
            "SERVING_MODEL_NAME": "resnet18",
            "SERVING_MODEL_WEIGHTS": "random",
            "SERVING_API_KEYS": value,
            "SERVING_LOG_FORMAT": "json",
        }
    )
    assert result.returncode == 2
    assert "SERVING_API_KEYS" in result.stderr
    for stream in (result.stdout, result.stderr):
        for secret in key_material(value):
            assert secret not in stream, (secret, stream)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    env = {
        "SERVING_MODEL_NAME": "resnet18",
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_API_KEYS": f"{GOOD_A},{GOOD_B}",
        "SERVING_LOG_LEVEL": "debug",  # everything the server can log
        "SERVING_LOG_FORMAT": "json",
    }
    log = tmp_path_factory.mktemp("secrets") / "server.log"  # stdout and stderr, both
    with app_process(env, log_path=log) as proc:
        proc.wait_ready()
        yield proc


NEAR_MISS = GOOD_A[:-1] + "X"


@pytest.mark.slow
def test_keys_in_failing_requests_reach_no_output(keyed_server: ManagedProcess) -> None:
    jpeg = {"content-type": "image/jpeg"}
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        answers = [
            # a wrong key, in either header
            client.post("/predict", content=b"x", headers={**jpeg, "X-API-Key": NEAR_MISS}),
            client.post("/predict", headers={"Authorization": f"Bearer {NEAR_MISS}"}),
            # a real key where it does not belong: query string, path, other headers, cookie
            client.post(f"/predict?api_key={GOOD_A}&token={GOOD_B}", content=b"x", headers=jpeg),
            client.get(f"/model/{GOOD_A}"),
            client.get("/model", headers={"X-Api-Token": GOOD_A, "Cookie": f"session={GOOD_B}"}),
            client.post("/predict", headers={"Authorization": f"Basic {GOOD_A}"}),
            # authorised, but the image URL carries a key in its query string and fails
            client.post(
                "/predict",
                json={"url": f"http://127.0.0.1:9/cat.jpg?key={GOOD_B}"},
                headers={"X-API-Key": GOOD_A},
            ),
            client.post(
                "/predict",
                json={"url": f"http://{GOOD_B}.invalid/cat.jpg"},
                headers={"X-API-Key": GOOD_A},
            ),
            # authorised, a bad body
            client.post("/predict", content=b"not an image", headers={**jpeg, "X-API-Key": GOOD_B}),
        ]
        ok = client.post(
            "/predict", content=photo_bytes("grace_hopper"), headers={**jpeg, "X-API-Key": GOOD_A}
        )
    assert ok.status_code == 200
    assert [a.status_code for a in answers] == [401, 401, 401, 404, 401, 401, 400, 502, 400]
    time.sleep(0.3)
    assert keyed_server.terminate() == 0  # everything flushed
    output = keyed_server.log_text()
    lines = output.splitlines()
    assert sum(1 for line in lines if '"message": "request"' in line) >= 10  # access log there
    for line in lines:
        if line.startswith("{"):
            json.loads(line)  # JSON logs stay JSON
        for secret in (GOOD_A, GOOD_B, NEAR_MISS, GOOD_A[:12], GOOD_B[-12:]):
            assert secret not in line, (secret, line)
