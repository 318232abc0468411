"""Shared fixtures: settings for fast tests, an in-process app, a real uvicorn process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings.config import Settings
from helpers.process import ManagedProcess, app_process

ROOT = Path(__file__).resolve().parent.parent

# Fast tests: a small architecture with random weights from a fixed seed.
FAST_MODEL = "resnet18"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_name": FAST_MODEL,
        "model_weights": "random",
        "random_seed": 0,
        "num_threads": 1,
        # The exact path: equal to torchvision's reference. The fast paths have their own tests.
        "precision": "fp32",
        "device": "cpu",
        "log_format": "text",
        # In-process apps run side by side in one session: no gRPC port to share. The protocol
        # has its own tests against real server processes (tests/oip/test_oip_app.py).
        "grpc_port": 0,
    }
    values.update(overrides)
    # _env_file=None and explicit values: the test never depends on the caller's environment.
    return Settings(_env_file=None, **values)


def wait_ready(client: TestClient, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return
        if response.json().get("status") == "failed":
            raise AssertionError(f"model failed to load: {response.json()}")
        time.sleep(0.05)
    raise AssertionError("the app did not become ready in time")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, as the server does (anyio's pytest plugin)."""
    return "asyncio"


@pytest.fixture(scope="session")
def fast_settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def client(fast_settings: Settings) -> Iterator[TestClient]:
    """One in-process app for the session (loading even resnet18 costs a second)."""
    app = create_app(fast_settings, on_fatal=lambda exc: None)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """A real `python -m app` process over a real socket (resnet18, random weights)."""
    env = {
        "SERVING_MODEL_NAME": FAST_MODEL,
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_NUM_THREADS": "2",
        "SERVING_LOG_FORMAT": "json",
    }
    log_dir = tmp_path_factory.mktemp("server")
    with app_process(env, log_path=log_dir / "server.log") as proc:
        proc.wait_ready()
        yield proc


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"torch threads env: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}"]
