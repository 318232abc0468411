"""The chart's ConfigMap carries every SERVING_* setting of app.settings.config.Settings, and
no other.

When someone adds a setting to the app, these tests fail until the chart's values.yaml
`config` map has it (one line).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from app.settings.config import ENV_PREFIX, Settings, env_default
from chart.chartkit import CHART, VALUES_DEV, VALUES_PROD, VALUES_PROD_GPU, Render, only

# Settings that come from a Secret or from the chart's own values, never from the ConfigMap:
# the API keys (values `apiKeys`), and the Redis URL and password of the prediction cache
# (values `cache.redis`: the URL of the Redis the chart deploys or of the user's, the password
# from a Secret; the serving Deployment sets both as `env`); the version label (values
# `modelVersion`, `canary.modelVersion`: one ConfigMap's settings serve both versions' pods),
# and the stable's shadow of the canary (values `canary.shadowPercent`).
SECRET_SETTINGS: frozenset[str] = frozenset(
    {
        "SERVING_API_KEYS",
        "SERVING_CACHE_REDIS_URL",
        "SERVING_CACHE_REDIS_PASSWORD",
        "SERVING_MODEL_VERSION",
        "SERVING_SHADOW_URL",
        "SERVING_SHADOW_PERCENT",
    }
)

# Where the chart's default deliberately differs from the app's, and why.
CHART_OVERRIDES = {
    # The image bakes the weights in and the root filesystem is read-only: fail fast.
    "SERVING_ALLOW_WEIGHTS_DOWNLOAD": "false",
    # The default image is the CPU image, which has no torch: it serves the OpenVINO IR baked
    # into it there (values-gpu.yaml empties it for the GPU image).
    "SERVING_MODEL_DIR": "/opt/model",
}


def setting_envs() -> set[str]:
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def configmap_data(render: Render, values: tuple[Path, ...]) -> dict[str, str]:
    cm = only(render(values), "ConfigMap", "rel-resnet-serving")
    data: dict[str, str] = cm["data"]
    return data


@pytest.mark.parametrize(
    "values",
    [(), (VALUES_DEV,), (VALUES_PROD,), VALUES_PROD_GPU],
    ids=["defaults", "dev", "prod", "prod+gpu"],
)
def test_configmap_has_every_setting_and_nothing_else(
    render: Render, values: tuple[Path, ...]
) -> None:
    data = configmap_data(render, values)
    rendered = {k for k in data if k.startswith(ENV_PREFIX)}
    expected = setting_envs() - SECRET_SETTINGS
    assert sorted(expected - rendered) == [], "settings missing from the chart's ConfigMap"
    assert sorted(rendered - expected) == [], "ConfigMap keys that are no setting of the app"
    assert set(data) == rendered, "non-SERVING_ keys in the ConfigMap"


def test_values_yaml_lists_the_settings_in_the_apps_order() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    names = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    assert list(values["config"]) == [n for n in names if n not in SECRET_SETTINGS]


def test_chart_defaults_equal_the_apps_except_the_documented_ones(render: Render) -> None:
    data = configmap_data(render, ())
    for name in Settings.model_fields:
        env = f"{ENV_PREFIX}{name.upper()}"
        if env in SECRET_SETTINGS:
            continue
        expected = CHART_OVERRIDES.get(env, env_default(name))
        assert data[env] == expected, env


@pytest.mark.parametrize(
    "values",
    [(), (VALUES_DEV,), (VALUES_PROD,), VALUES_PROD_GPU],
    ids=["defaults", "dev", "prod", "prod+gpu"],
)
def test_rendered_settings_are_valid_for_the_app(
    render: Render, values: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app reads them as the pod gets them: environment variables from the ConfigMap.
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    data = configmap_data(render, values)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.model_name == data["SERVING_MODEL_NAME"]
    ports = only(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    # Every port the app listens on is a named container port, and no other.
    listening = {
        "http": settings.port,
        "metrics": settings.metrics_port,
        "grpc": settings.grpc_port,
    }
    assert {p["name"]: p["containerPort"] for p in ports} == {
        name: number for name, number in listening.items() if number
    }


def test_no_secret_setting_in_the_configmap(render: Render) -> None:
    data = configmap_data(render, ())
    assert not any(word in key for key in data for word in ("KEY", "TOKEN", "PASSWORD", "SECRET"))


@pytest.mark.parametrize(
    ("set_values", "url"),
    [
        (["cache.redis.enabled=true"], "redis://rel-resnet-serving-redis:6379/0"),
        (
            ["cache.redis.url=rediss://cache.example.internal:6380/2"],
            "rediss://cache.example.internal:6380/2",
        ),
    ],
    ids=["chart's Redis", "existing Redis"],
)
def test_the_redis_url_the_chart_sets_is_valid_for_the_app(
    render: Render, monkeypatch: pytest.MonkeyPatch, set_values: list[str], url: str
) -> None:
    # The pod gets the ConfigMap (envFrom) and then the Deployment's own env, which wins.
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    manifests = render((), set_values)
    for key, value in only(manifests, "ConfigMap", "rel-resnet-serving")["data"].items():
        monkeypatch.setenv(key, value)
    deployment = only(manifests, "Deployment", "rel-resnet-serving")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SERVING_CACHE_REDIS_URL"]["value"] == url
    monkeypatch.setenv("SERVING_CACHE_REDIS_URL", url)
    settings = Settings(_env_file=None)
    assert settings.cache_redis_url.get_secret_value() == url
