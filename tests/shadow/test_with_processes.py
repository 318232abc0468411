"""The shadow comparison end to end: real `python -m app` processes, one shadowing its /predict
answers to another over a real socket, as the stable and the canary of an A/B test do.

- B, the target (version `v2`, seed 0), and two processes that copy every answer to it: A with
  B's model and seed (the two agree), C with another seed (they disagree). The counts are
  checked against B's own answers for the same images, asked afterwards.
- Targets that fail: nothing listening (`error`), a stopped process (SIGSTOP) with one copy
  allowed in flight (`dropped`), and a percentage of 0 (no copy at all).
- Bad SERVING_SHADOW_* values stop start-up with exit 2.

Behaviour only: every answer of the shadowing process is a 200 equal to what it answers
without a copy; nothing here measures a time."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.metrics import samples_of
from helpers.process import ManagedProcess, app_process, free_port, run_app

pytestmark = pytest.mark.slow

KEY = "shadow-test-key-0123456789"  # both versions share it, as a release's pods do
BASE_ENV = {
    "SERVING_MODEL_NAME": "resnet18",  # tests/conftest.py's FAST_MODEL
    "SERVING_MODEL_WEIGHTS": "random",
    "SERVING_NUM_THREADS": "1",
    "SERVING_LOG_FORMAT": "json",
    "SERVING_API_KEYS": KEY,
}
AUTH = {"X-API-Key": KEY}
RESULTS = ("agree", "disagree", "error", "dropped")
_serial = iter(range(10**6))


def unique_jpeg() -> bytes:
    """A small photo-like JPEG that no other request of the session sends."""
    rng = np.random.default_rng(next(_serial) + 5000)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def predict(server: ManagedProcess, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/predict",
        content=data,
        headers={"content-type": "image/jpeg", **AUTH, **headers},
        timeout=60,
    )


def top1(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    class_id: int = response.json()["predictions"][0]["class_id"]
    return class_id


def metrics(server: ManagedProcess) -> dict[str, float]:
    return samples_of(httpx.get(f"{server.base_url}/metrics", timeout=10).text)


def comparisons(server: ManagedProcess) -> dict[str, float]:
    samples = metrics(server)
    return {r: samples[f'shadow_comparisons_total{{result="{r}"}}'] for r in RESULTS}


def predictions_answered(server: ManagedProcess) -> float:
    key = 'request_count_total{method="POST",route="/predict",status="200"}'
    return metrics(server).get(key, 0.0)


def shadow_info(server: ManagedProcess) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(f"{server.base_url}/model", headers=AUTH, timeout=10).json()
    shadow: dict[str, Any] = info["shadow"]
    return shadow


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def shadowing(target: str, **settings: str) -> dict[str, str]:
    return {**BASE_ENV, "SERVING_SHADOW_URL": target, "SERVING_SHADOW_PERCENT": "100",
            **settings}  # fmt: skip


# --- agreements and disagreements ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trio(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ManagedProcess, ManagedProcess, ManagedProcess]]:
    """(B, A, C): B the target; A copies to it with B's model and seed, C with another seed."""
    logs = tmp_path_factory.mktemp("shadow")
    b_env = {**BASE_ENV, "SERVING_MODEL_VERSION": "v2", "SERVING_RANDOM_SEED": "0"}
    with app_process(b_env, log_path=logs / "b.log") as b:
        a_env = shadowing(b.base_url, SERVING_RANDOM_SEED="0")
        c_env = shadowing(b.base_url, SERVING_RANDOM_SEED="1", SERVING_MODEL_VERSION="v1-c")
        with (
            app_process(a_env, log_path=logs / "a.log") as a,
            app_process(c_env, log_path=logs / "c.log") as c,
        ):
            for server in (b, a, c):
                server.wait_ready()
            yield b, a, c


def send_and_count(
    shadower: ManagedProcess, target: ManagedProcess, images: list[bytes]
) -> tuple[dict[str, float], list[int]]:
    """The images to `shadower`, every copy answered; the comparisons they made, and the
    shadower's top-1 class of each."""
    before = comparisons(shadower)
    received = predictions_answered(target)
    ours = []
    for data in images:
        response = predict(shadower, data)
        ours.append(top1(response))
        assert response.headers["x-model-version"] == response.json()["model_version"]
    wait_for(
        lambda: sum(comparisons(shadower).values()) - sum(before.values()) >= len(images),
        "every copy compared",
    )
    after = comparisons(shadower)
    # The target answered one /predict per copy (it counts each once its answer has left, so
    # the last may lag the shadower's count by a moment).
    wait_for(lambda: predictions_answered(target) - received >= len(images), "the target's counts")
    assert predictions_answered(target) - received == len(images)
    return {r: after[r] - before[r] for r in RESULTS}, ours


@pytest.mark.parametrize("which", ["same seed", "other seed"])
def test_agreements_and_disagreements_are_counted(
    trio: tuple[ManagedProcess, ManagedProcess, ManagedProcess], which: str
) -> None:
    b, a, c = trio
    shadower = a if which == "same seed" else c
    images = [unique_jpeg() for _ in range(4)]
    counted, ours = send_and_count(shadower, b, images)
    # The truth: B's own answers for the same images (asked now, as a copy, so they are not
    # copied again; B copies nothing anyway).
    theirs = [top1(predict(b, data, **{"X-Shadow": "1"})) for data in images]
    agree = sum(x == y for x, y in zip(ours, theirs, strict=True))
    assert counted == {"agree": agree, "disagree": len(images) - agree, "error": 0, "dropped": 0}
    if which == "same seed":
        assert agree == len(images)
    else:
        assert agree < len(images), "seeds 0 and 1 gave the same top-1 class: pick another"


def test_the_shadowing_processes_answer_as_without_a_copy(
    trio: tuple[ManagedProcess, ManagedProcess, ManagedProcess],
) -> None:
    _, a, _ = trio
    data = unique_jpeg()
    copied = predict(a, data, **{"Cache-Control": "no-store"})
    alone = predict(a, data, **{"Cache-Control": "no-store", "X-Shadow": "1"})  # never copied
    assert copied.status_code == alone.status_code == 200
    first, second = copied.json(), alone.json()
    assert set(first) == set(second)
    for key in ("model", "model_version", "weights", "predictions", "image", "cache"):
        assert first[key] == second[key], key
    assert copied.headers["x-model-version"] == "v1"
    assert "x-shadow" not in copied.headers


def test_a_copy_is_never_copied_again(
    trio: tuple[ManagedProcess, ManagedProcess, ManagedProcess],
) -> None:
    """A request carrying X-Shadow: 1 is answered and not copied: at any moment a copy is
    either in flight (/model's `in_flight`, read first) or counted (/metrics, read after)."""
    _, a, _ = trio
    wait_for(lambda: shadow_info(a)["in_flight"] == 0, "earlier copies settled")
    before = sum(comparisons(a).values())
    for _ in range(3):
        assert predict(a, unique_jpeg(), **{"X-Shadow": "1"}).status_code == 200
    in_flight = shadow_info(a)["in_flight"]
    assert in_flight + sum(comparisons(a).values()) == before


def test_model_shows_the_shadow_and_the_other_version(
    trio: tuple[ManagedProcess, ManagedProcess, ManagedProcess],
) -> None:
    b, a, _ = trio
    top1(predict(a, unique_jpeg()))
    wait_for(lambda: shadow_info(a)["version"] == "v2", "the target's X-Model-Version seen")
    info = shadow_info(a)
    assert info["url"] == b.base_url
    assert info["percent"] == 100.0
    assert info["concurrency"] == 4
    assert httpx.get(f"{b.base_url}/model", headers=AUTH, timeout=10).json()["shadow"] is None
    # The shadow's metrics are the shadowing process's: its own model_version, and only there.
    text = httpx.get(f"{a.base_url}/metrics", timeout=10).text
    assert 'shadow_comparisons_total{model_version="v1",result="agree"}' in text
    assert "shadow_" not in httpx.get(f"{b.base_url}/metrics", timeout=10).text


# --- targets that fail -------------------------------------------------------------------------


def test_a_target_that_is_down_is_an_error_and_the_answers_are_unchanged(
    tmp_path: Path,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with app_process(shadowing(nowhere), log_path=tmp_path / "a.log") as a:
        a.wait_ready()
        images = [unique_jpeg() for _ in range(3)]
        for data in images:
            copied = predict(a, data)
            assert copied.status_code == 200, copied.text
            alone = predict(a, data, **{"X-Shadow": "1"})
            assert copied.json()["predictions"] == alone.json()["predictions"]
        wait_for(lambda: comparisons(a)["error"] == len(images), "every copy failed")
        assert comparisons(a) == {"agree": 0, "disagree": 0, "error": 3, "dropped": 0}
        assert metrics(a)["shadow_duration_seconds_count{}"] == 3
        # One warning when the target starts failing, not one per copy.
        warnings = [line for line in a.log_text().splitlines() if "shadow target failing" in line]
        assert len(warnings) == 1, warnings


def test_a_stopped_target_holds_one_copy_and_the_rest_are_dropped(tmp_path: Path) -> None:
    with app_process(BASE_ENV, log_path=tmp_path / "target.log") as target:
        target.wait_ready()
        env = shadowing(target.base_url, SERVING_SHADOW_CONCURRENCY="1",
                        SERVING_SHADOW_TIMEOUT_S="300")  # fmt: skip
        with app_process(env, log_path=tmp_path / "a.log") as a:
            a.wait_ready()
            os.kill(target.pid, signal.SIGSTOP)
            try:
                statuses = [predict(a, unique_jpeg()).status_code for _ in range(5)]
                assert statuses == [200] * 5
                # The first copy waits on the stopped target; the four after it found no room.
                assert comparisons(a) == {"agree": 0, "disagree": 0, "error": 0, "dropped": 4}
                assert shadow_info(a)["in_flight"] == 1
            finally:
                os.kill(target.pid, signal.SIGCONT)
            wait_for(lambda: shadow_info(a)["in_flight"] == 0, "the held copy answered")
            counted = comparisons(a)
            assert counted["agree"] + counted["disagree"] == 1
            assert (counted["error"], counted["dropped"]) == (0, 4)


def test_percent_zero_sends_no_copy(tmp_path: Path) -> None:
    with app_process(BASE_ENV, log_path=tmp_path / "target.log") as target:
        target.wait_ready()
        env = shadowing(target.base_url, SERVING_SHADOW_PERCENT="0")
        with app_process(env, log_path=tmp_path / "a.log") as a:
            a.wait_ready()
            received = predictions_answered(target)
            for _ in range(5):
                assert predict(a, unique_jpeg()).status_code == 200
            assert shadow_info(a)["in_flight"] == 0  # read first: in flight, or counted below
            assert comparisons(a) == dict.fromkeys(RESULTS, 0.0)  # the series exist, at 0
            assert predictions_answered(target) == received
            assert shadow_info(a)["percent"] == 0.0


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("SERVING_SHADOW_URL", "canary:8000"),
        ("SERVING_SHADOW_URL", "ftp://canary:8000"),
        ("SERVING_SHADOW_PERCENT", "150"),
        ("SERVING_SHADOW_CONCURRENCY", "0"),
        ("SERVING_SHADOW_TIMEOUT_S", "0"),
    ],
)
def test_bad_shadow_settings_stop_start_up_with_exit_2(env: str, value: str) -> None:
    result = run_app({env: value, "SERVING_MODEL_WEIGHTS": "random"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("resnet-serving: invalid configuration: ")
    assert env in lines[0]
