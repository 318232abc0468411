"""Hostile and odd images against a real server: each answered with the right 4xx or a correct
200; never a 5xx, never a stuck worker, and the server serves normally after. (How long each
takes is no assertion: the client's timeout only turns a hang into a failure.)"""

from __future__ import annotations

import httpx
import pytest

from helpers.hostile import CORPUS
from helpers.images import photo_bytes
from helpers.process import ManagedProcess


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_image_gets_a_clean_answer(server: ManagedProcess, name: str) -> None:
    make, allowed = CORPUS[name]
    data = make()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = client.post(
            "/predict", files={"file": ("upload", data, "application/octet-stream")}
        )
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.status_code == 200:
        assert len(body["predictions"]) == 5
    else:
        assert body["error"]["code"] in {
            "invalid_image", "image_too_large", "unsupported_image_format", "empty_image",
        }  # fmt: skip


def test_server_still_serves_after_the_corpus(server: ManagedProcess) -> None:
    # Runs after the parametrized cases above (same module, file order).
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        assert client.get("/ready").status_code == 200
        response = client.post(
            "/predict", files={"file": ("g.jpg", photo_bytes("grace_hopper"), "image/jpeg")}
        )
        assert response.status_code == 200
    assert server.proc is not None
    assert server.proc.poll() is None  # never crashed
