"""The prediction cache end to end: real `python -m app` processes sharing a real Redis
(Debian's redis-server on loopback, with a password), as replicas of one Deployment would.

Each test sends images no other test sends (`unique_jpeg`), so the order of the tests does
not matter; the servers and the Redis live for the module."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.redis_server import RedisServer, redis_server_binary
from helpers.metrics import samples_of
from helpers.process import ManagedProcess, app_process, run_app

pytestmark = pytest.mark.slow

# The tests' fast model (tests/conftest.py's FAST_MODEL).
FAST_MODEL = "resnet18"
BASE_ENV = {
    "SERVING_MODEL_NAME": FAST_MODEL,
    "SERVING_MODEL_WEIGHTS": "random",
    "SERVING_NUM_THREADS": "1",
    "SERVING_LOG_FORMAT": "json",
}
_serial = iter(range(10**6))


def unique_jpeg() -> bytes:
    """A small photo-like JPEG that no other request of the session sends."""
    rng = np.random.default_rng(next(_serial) + 1000)
    pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def predict(server: ManagedProcess, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/predict",
        content=data,
        headers={"content-type": "image/jpeg", **headers},
        timeout=30,
    )


def metrics(server: ManagedProcess) -> dict[str, float]:
    return samples_of(httpx.get(f"{server.base_url}/metrics", timeout=10).text)


def lookups(server: ManagedProcess, tier: str, result: str) -> float:
    return metrics(server).get(
        f'prediction_cache_requests_total{{result="{result}",tier="{tier}"}}', 0.0
    )


def inferred(server: ManagedProcess) -> float:
    """Images that went through the model (the batch-size histogram's sum)."""
    return metrics(server).get("batch_size_sum{}", 0.0)


def image_keys(redis: RedisServer, data: bytes) -> list[bytes]:
    import hashlib

    with redis.client() as client:
        return sorted(client.keys(f"*:{hashlib.sha256(data).hexdigest()}"))


def wait_for(condition: Any, timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def redis_up(server: ManagedProcess) -> float | None:
    return metrics(server).get("prediction_cache_redis_up{}")


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        pytest.fail("redis-server is not installed: scripts/install.sh installs it")
    with RedisServer(tmp_path_factory.mktemp("redis") / "redis.log") as server:
        yield server


@pytest.fixture(scope="module")
def replicas(
    redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    """Two replicas of one model on one Redis: A is given the password on its own, B inside
    the URL (both ways the chart and users configure it)."""
    logs = tmp_path_factory.mktemp("replicas")
    a_env = {**BASE_ENV, "SERVING_CACHE_REDIS_URL": redis.url,
             "SERVING_CACHE_REDIS_PASSWORD": redis.password}  # fmt: skip
    b_env = {**BASE_ENV, "SERVING_CACHE_REDIS_URL": redis.url_with_password}
    with (
        app_process(a_env, log_path=logs / "a.log") as a,
        app_process(b_env, log_path=logs / "b.log") as b,
    ):
        a.wait_ready()
        b.wait_ready()
        yield a, b


# --- hits and misses ----------------------------------------------------------------------------


def test_a_repeated_image_is_answered_from_the_cache(
    replicas: tuple[ManagedProcess, ManagedProcess],
) -> None:
    a, _ = replicas
    image = unique_jpeg()
    before = inferred(a)
    first, second = predict(a, image), predict(a, image)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert (first.headers["x-cache"], first.json()["cache"]) == ("miss", "miss")
    assert (second.headers["x-cache"], second.json()["cache"]) == ("hit", "hit")
    assert second.json()["predictions"] == first.json()["predictions"]
    assert second.json()["image"] == first.json()["image"] == {
        "format": "JPEG", "width": 128, "height": 96,
    }  # fmt: skip
    miss_timing, hit_timing = first.json()["timing_ms"], second.json()["timing_ms"]
    assert miss_timing["skipped"] == []
    assert miss_timing["decode"] > 0
    assert miss_timing["batch_size"] >= 1
    assert hit_timing["skipped"] == ["decode", "queue", "inference"]
    assert hit_timing["decode"] is hit_timing["queue"] is hit_timing["inference"] is None
    assert hit_timing["batch_size"] == 0
    assert hit_timing["cache"] >= 0
    assert inferred(a) == before + 1
    # Any top_k comes from the one entry: the whole score row is kept.
    top20 = httpx.post(f"{a.base_url}/predict?top_k=20", content=image,
                       headers={"content-type": "image/jpeg"}, timeout=30)  # fmt: skip
    assert top20.headers["x-cache"] == "hit"
    assert top20.json()["predictions"][:5] == first.json()["predictions"]
    assert len(top20.json()["predictions"]) == 20


def test_replicas_share_hits_through_redis(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer
) -> None:
    a, b = replicas
    image = unique_jpeg()
    hits_before = lookups(b, "redis", "hit")
    assert predict(a, image).headers["x-cache"] == "miss"
    wait_for(lambda: image_keys(redis, image), 10, "A's answer written to Redis")
    b_inferred = inferred(b)
    answer = predict(b, image)
    assert answer.headers["x-cache"] == "hit", answer.text
    assert lookups(b, "redis", "hit") == hits_before + 1
    assert inferred(b) == b_inferred, "B did not run the model"
    # The Redis hit filled B's own tier: the next one does not go to Redis.
    assert predict(b, image).headers["x-cache"] == "hit"
    assert lookups(b, "redis", "hit") == hits_before + 1


def test_another_model_never_gets_this_models_answer(
    replicas: tuple[ManagedProcess, ManagedProcess],
    redis: RedisServer,
    tmp_path: Path,
) -> None:
    a, _ = replicas
    image = unique_jpeg()
    assert predict(a, image).status_code == 200
    wait_for(lambda: image_keys(redis, image), 10, "A's answer written to Redis")
    # The same architecture with other (random) weights: same image, another model.
    env = {**BASE_ENV, "SERVING_RANDOM_SEED": "7", "SERVING_CACHE_REDIS_URL": redis.url,
           "SERVING_CACHE_REDIS_PASSWORD": redis.password}  # fmt: skip
    with app_process(env, log_path=tmp_path / "other.log") as other:
        other.wait_ready()
        answer = predict(other, image)
        assert answer.headers["x-cache"] == "miss"
        assert lookups(other, "redis", "miss") == 1
        assert answer.json()["predictions"] != predict(a, image).json()["predictions"]
        wait_for(lambda: len(image_keys(redis, image)) == 2, 10, "one entry per model")


# --- Cache-Control ------------------------------------------------------------------------------


def test_no_store_neither_reads_nor_writes(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer
) -> None:
    a, _ = replicas
    image = unique_jpeg()
    before = inferred(a)
    for _ in range(2):
        answer = predict(a, image, **{"cache-control": "no-store"})
        assert answer.headers["x-cache"] == "miss"
        assert answer.json()["timing_ms"]["cache"] is None
    assert inferred(a) == before + 2
    assert predict(a, image).headers["x-cache"] == "miss", "nothing was stored"
    assert predict(a, image, **{"cache-control": "no-store"}).headers["x-cache"] == "miss"


def test_no_cache_infers_afresh_and_refreshes_the_entry(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer
) -> None:
    a, _ = replicas
    image = unique_jpeg()
    assert predict(a, image).headers["x-cache"] == "miss"
    wait_for(lambda: image_keys(redis, image), 10, "written to Redis")
    (key,) = image_keys(redis, image)
    with redis.client() as client:
        good = client.get(key)
        client.set(key, b"stale")
    before = inferred(a)
    answer = predict(a, image, **{"cache-control": "no-cache"})
    assert answer.headers["x-cache"] == "miss"
    assert inferred(a) == before + 1, "inferred afresh, though the entry was there"

    def refreshed() -> bool:
        with redis.client() as client:
            return bool(client.get(key) == good)

    wait_for(refreshed, 10, "the fresh answer replaced the entry")
    assert predict(a, image).headers["x-cache"] == "hit"


# --- errors -----------------------------------------------------------------------------------


def test_errors_are_never_cached(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer
) -> None:
    a, _ = replicas
    broken = unique_jpeg()[:200]  # a truncated JPEG
    entries = metrics(a)["prediction_cache_entries{}"]
    for _ in range(2):
        answer = predict(a, broken)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_image"
    time.sleep(0.3)
    assert image_keys(redis, broken) == []
    assert metrics(a)["prediction_cache_entries{}"] == entries


def test_a_corrupt_or_foreign_value_is_a_miss_and_is_replaced(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer
) -> None:
    a, b = replicas
    for plant in ("garbage", "a list"):
        image = unique_jpeg()
        assert predict(a, image).status_code == 200
        wait_for(lambda image=image: image_keys(redis, image), 10, "written to Redis")
        (key,) = image_keys(redis, image)
        with redis.client() as client:
            client.delete(key)
            if plant == "garbage":
                client.set(key, b"RSPC\x01" + b"\xff" * 50)
            else:
                client.rpush(key, b"not a string value")
        errors = lookups(b, "redis", "error")
        answer = predict(b, image)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-cache"] == "miss"
        assert lookups(b, "redis", "error") == errors + 1
        if plant == "garbage":

            def replaced(key: bytes = key) -> bool:
                with redis.client() as client:
                    value = client.get(key)
                return value is not None and value.startswith(b"RSPC") and len(value) > 4000

            wait_for(replaced, 10, "B's answer replaced the garbage")


# --- single-flight ------------------------------------------------------------------------------


def test_identical_images_arriving_together_are_inferred_once(
    replicas: tuple[ManagedProcess, ManagedProcess],
) -> None:
    a, _ = replicas
    image = unique_jpeg()
    before, coalesced = inferred(a), metrics(a)["prediction_cache_coalesced_total{}"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(f"{a.base_url}/predict", content=image,
                            headers={"content-type": "image/jpeg"})
                for _ in range(12)
            ))  # fmt: skip

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [200] * 12
    assert inferred(a) == before + 1
    assert sorted(r.headers["x-cache"] for r in answers).count("miss") == 1
    assert len({json.dumps(r.json()["predictions"]) for r in answers}) == 1
    assert metrics(a)["prediction_cache_coalesced_total{}"] > coalesced


# --- the protocol ------------------------------------------------------------------------------


def test_the_protocols_rest_infer_uses_the_same_cache(
    replicas: tuple[ManagedProcess, ManagedProcess],
) -> None:
    a, _ = replicas
    image = unique_jpeg()
    assert predict(a, image).headers["x-cache"] == "miss"
    before = inferred(a)
    header = json.dumps({
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4 + len(image)}}],
        "outputs": [{"name": "scores", "parameters": {"binary_data": False}}],
    }).encode()  # fmt: skip
    body = header + struct.pack("<I", len(image)) + image
    answer = httpx.post(
        f"{a.base_url}/v2/models/{FAST_MODEL}/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header)),
                 "content-type": "application/octet-stream"},
        timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert inferred(a) == before, "the protocol's call was a hit"
    scores = np.array(answer.json()["outputs"][0]["data"], dtype=np.float32)
    top = predict(a, image).json()["predictions"][0]
    assert int(np.argmax(scores)) == top["class_id"]
    no_store = httpx.post(
        f"{a.base_url}/v2/models/{FAST_MODEL}/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header)),
                 "content-type": "application/octet-stream", "cache-control": "no-store"},
        timeout=30,
    )  # fmt: skip
    assert no_store.status_code == 200
    assert inferred(a) == before + 1


# --- Redis in trouble -----------------------------------------------------------------------------


def test_a_hung_redis_is_a_miss_within_the_deadline_and_is_used_again(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer
) -> None:
    a, b = replicas
    redis.pause()  # SIGSTOP: connections are accepted by the kernel, nothing answers
    try:
        errors = lookups(b, "redis", "error")
        for _ in range(6):
            answer = predict(b, unique_jpeg(), **{"x-request-timeout": "5"})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-cache"] == "miss"
        assert lookups(b, "redis", "error") >= errors + 6
        wait_for(lambda: redis_up(b) == 0, 15, "B reports Redis down")
    finally:
        redis.resume()
    wait_for(lambda: redis_up(a) == redis_up(b) == 1, 30, "Redis picked up again")
    image = unique_jpeg()
    predict(a, image)
    wait_for(lambda: image_keys(redis, image), 10, "written to Redis")
    assert predict(b, image).headers["x-cache"] == "hit"


def test_a_killed_redis_is_a_miss_and_hits_resume_once_it_is_back(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer
) -> None:
    a, b = replicas
    redis.kill()
    try:
        for _ in range(4):
            assert predict(a, unique_jpeg()).status_code == 200
            assert predict(b, unique_jpeg()).status_code == 200
        wait_for(lambda: redis_up(a) == redis_up(b) == 0, 15, "both report Redis down")
    finally:
        redis.start()  # the same port and password, empty
    wait_for(lambda: redis_up(a) == redis_up(b) == 1, 30, "Redis picked up again")
    image = unique_jpeg()
    assert predict(a, image).headers["x-cache"] == "miss"
    wait_for(lambda: image_keys(redis, image), 10, "written to the new Redis")
    assert predict(b, image).headers["x-cache"] == "hit"


# --- configuration and secrets ----------------------------------------------------------------


def test_the_password_is_never_shown(
    replicas: tuple[ManagedProcess, ManagedProcess], redis: RedisServer, tmp_path: Path
) -> None:
    a, b = replicas
    for server in (a, b):
        model = httpx.get(f"{server.base_url}/model", timeout=10)
        assert model.status_code == 200
        described = model.json()["cache"]["redis"]
        assert described["url"] == f"redis://127.0.0.1:{redis.port}/0"
        for text in (model.text, httpx.get(f"{server.base_url}/metrics").text, server.log_text()):
            assert redis.password not in text
    # A wrong password: Redis refuses, the service serves and says why, without the password.
    wrong = "not-the-password-1234"
    env = {**BASE_ENV, "SERVING_CACHE_REDIS_URL": f"redis://:{wrong}@127.0.0.1:{redis.port}/0"}
    with app_process(env, log_path=tmp_path / "wrong.log") as server:
        server.wait_ready()
        assert predict(server, unique_jpeg()).status_code == 200
        assert httpx.get(f"{server.base_url}/model").json()["cache"]["redis"]["up"] is False
        log = server.log_text()
        assert "SERVING_CACHE_REDIS_URL" in log
        assert wrong not in log
        assert redis.password not in log


def test_an_unreachable_redis_at_start_up_is_a_warning(tmp_path: Path) -> None:
    from harness.process import free_port

    env = {**BASE_ENV, "SERVING_CACHE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with app_process(env, log_path=tmp_path / "unreachable.log") as server:
        server.wait_ready()
        image = unique_jpeg()
        assert predict(server, image).headers["x-cache"] == "miss"
        assert predict(server, image).headers["x-cache"] == "hit", "the in-process tier works"
        warnings = [line for line in server.log_text().splitlines() if "does not answer" in line]
        assert warnings
        assert json.loads(warnings[0])["level"] == "warning"


@pytest.mark.parametrize(
    "url",
    ["http://:hunter2-secret@cache:6379/0", "redis://:hunter2-secret@cache:notaport/0",
     "redis://:hunter2-secret@cache:6379/db"],
)  # fmt: skip
def test_a_malformed_redis_url_stops_start_up_without_echoing_it(url: str) -> None:
    completed = run_app({**BASE_ENV, "SERVING_CACHE_REDIS_URL": url})
    assert completed.returncode == 2, completed.stderr[-2000:]
    output = completed.stdout + completed.stderr
    assert "SERVING_CACHE_REDIS_URL" in output
    assert "hunter2" not in output
