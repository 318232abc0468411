"""API keys on a real server process over sockets: /predict and /model need a valid key (Bearer
or X-API-Key), probes, /metrics and the OpenAPI document do not, and no key (valid or not) ever
reaches the logs or the settings' repr."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import make_settings
from helpers.predict import post_photo
from helpers.process import ManagedProcess, app_process

KEY_A = "a-very-secret-key-0001"
KEY_B = "another-secret-key-0002"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    env = {
        "SERVING_MODEL_NAME": "resnet18",
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_API_KEYS": f"{KEY_A},{KEY_B}",
        "SERVING_LOG_LEVEL": "debug",
    }
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    with app_process(env, log_path=log) as proc:
        proc.wait_ready()
        yield proc


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-wrong-key"},
        {"X-API-Key": "wrong-key-wrong-key"},
        {"Authorization": f"Basic {KEY_A}"},
        {"X-API-Key": KEY_A[:-1]},
    ],
    ids=["missing", "wrong-bearer", "wrong-header", "basic-scheme", "prefix"],
)
def test_predict_without_a_valid_key_is_401(
    keyed_server: ManagedProcess, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        response = post_photo(client, headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/model").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY_A}"}, {"X-API-Key": KEY_B}],
    ids=["bearer", "x-api-key"],
)
def test_predict_with_a_valid_key(keyed_server: ManagedProcess, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        assert post_photo(client, headers).status_code == 200
        assert client.get("/model", headers=headers).status_code == 200


def test_probes_and_metrics_need_no_key(keyed_server: ManagedProcess) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        for path in ("/health", "/ready", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_keys_never_reach_the_logs(keyed_server: ManagedProcess) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=30) as client:
        post_photo(client, {"Authorization": f"Bearer {KEY_A}"})
        post_photo(client, {"X-API-Key": "wrong-key-wrong-key"})
    time.sleep(0.2)
    log = keyed_server.log_text()
    assert "request" in log  # the access log is there (debug level)
    for secret in (KEY_A, KEY_B, "wrong-key-wrong-key"):
        assert secret not in log


def test_openapi_documents_both_key_schemes(keyed_server: ManagedProcess) -> None:
    spec = httpx.get(f"{keyed_server.base_url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
    assert spec["paths"]["/predict"]["post"]["security"]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_settings_repr_hides_keys() -> None:
    settings = make_settings(api_keys=f"{KEY_A},{KEY_B}")
    assert KEY_A not in repr(settings)
    assert KEY_A not in json.dumps(settings.model_dump(mode="json"))
