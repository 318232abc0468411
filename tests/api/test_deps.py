"""app/api/deps.py: no dependency of a request leaves the event loop for FastAPI's thread pool.

FastAPI runs a plain `def` dependency on a worker thread: a round trip to another thread per
dependency per request, measured on the request path by bench/experiments/profile_request.py.
Ours only read attributes, so they are `async def`; this fails when one that is not comes back."""

from __future__ import annotations

from typing import Any

import fastapi.dependencies.utils as fastapi_deps
import pytest
from fastapi.testclient import TestClient

from helpers.images import photo_bytes


@pytest.fixture
def threadpool_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = fastapi_deps.run_in_threadpool  # type: ignore[attr-defined]  # re-exported from starlette

    async def recording(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(func, "__qualname__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(fastapi_deps, "run_in_threadpool", recording)
    return calls


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/predict", {"content": photo_bytes("grace_hopper"),
                              "headers": {"content-type": "image/jpeg"}}),
        ("post", "/predict", {"files": {"file": ("a.jpg", photo_bytes("grace_hopper"))}}),
        ("post", "/predict/batch", {"files": [("files", ("a.jpg", photo_bytes("grace_hopper")))]}),
        ("get", "/ready", {}),
        ("get", "/model", {}),
        ("get", "/metrics", {}),
    ],
)  # fmt: skip
def test_request_dependencies_stay_on_the_event_loop(
    client: TestClient, threadpool_calls: list[str], method: str, path: str, kwargs: Any
) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == 200, response.text
    assert threadpool_calls == []
