"""The cache's parts on their own: the Cache-Control rule, the stored value's codec, the LRU's
byte bound, the circuit breaker, the Redis URL's grammar, single-flight."""

from __future__ import annotations

import asyncio
import struct
import time

import numpy as np
import pytest

from app.cache.breaker import CircuitBreaker
from app.cache.entry import BadEntryError, CachedScores, decode, encode
from app.cache.flights import Flights
from app.cache.identity import ModelIdentity, image_key
from app.cache.local import LocalTier
from app.cache.policy import CachePolicy, from_cache_control
from app.cache.redis_url import parse_redis_url
from app.errors import DeadlineExceededError, InvalidImageError, MemoryBusyError

PASSWORD = "s3cret-Pass/word"  # noqa: S105 (a test value)


def identity(**changes: object) -> ModelIdentity:
    values: dict[str, object] = {
        "model": "resnet50", "weights": "ResNet50_Weights.IMAGENET1K_V2", "precision": "float32",
        "backend": "openvino", "num_classes": 1000,
        "preprocessing": {"resize_size": 232, "crop_size": 224, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"},
    }  # fmt: skip
    values.update(changes)
    return ModelIdentity(**values)  # type: ignore[arg-type]


def entry(classes: int = 1000, seed: int = 0) -> CachedScores:
    row = np.random.default_rng(seed).random(classes).astype(np.float32)
    return CachedScores.of(row / row.sum(), "JPEG", (640, 480))


# --- Cache-Control --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "policy"),
    [
        (None, CachePolicy.USE),
        ("", CachePolicy.USE),
        ("max-age=60", CachePolicy.USE),
        ("no-cache", CachePolicy.REFRESH),
        ("No-Cache", CachePolicy.REFRESH),
        ("max-age=0, no-cache", CachePolicy.REFRESH),
        ("no-store", CachePolicy.BYPASS),
        ("no-cache, no-store", CachePolicy.BYPASS),
        ('no-cache="x-foo"', CachePolicy.REFRESH),
    ],
)
def test_cache_control(header: str | None, policy: CachePolicy) -> None:
    assert from_cache_control(header) is policy


# --- identity and key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"model": "resnet18"},
        {"weights": "ResNet50_Weights.IMAGENET1K_V1"},
        {"weights": "random:1"},
        {"precision": "bfloat16"},
        {"backend": "torch"},
        {"preprocessing": {"resize_size": 256, "crop_size": 224}},
    ],
)
def test_another_model_has_another_fingerprint(change: dict[str, object]) -> None:
    assert identity(**change).fingerprint() != identity().fingerprint()
    assert identity().fingerprint() == identity().fingerprint()


def test_the_key_holds_the_model_and_the_image_hash_and_nothing_else() -> None:
    key = image_key(identity().fingerprint(), "ab" * 32)
    assert key.endswith(":" + "ab" * 32)
    assert identity().fingerprint().hex() in key


# --- the stored value ---------------------------------------------------------------------------


def test_an_entry_survives_its_encoding() -> None:
    fingerprint = identity().fingerprint()
    original = entry()
    back = decode(encode(original, fingerprint), fingerprint, 1000)
    np.testing.assert_array_equal(back.probabilities, original.probabilities)
    assert (back.image_format, back.image_size) == ("JPEG", (640, 480))
    assert not back.probabilities.flags.writeable


def _corruptions() -> dict[str, bytes]:
    fingerprint = identity().fingerprint()
    good = encode(entry(), fingerprint)
    nan = entry().probabilities.copy()
    nan[3] = np.nan
    return {
        "empty": b"",
        "foreign text": b'{"label": "cat"}',
        "truncated": good[:-4],
        "one byte more": good + b"\x00",
        "another model": encode(entry(), identity(model="resnet18").fingerprint()),
        "another class count": encode(entry(classes=10), fingerprint),
        "another format version": good[:4] + b"\x09" + good[5:],
        "a NaN score": encode(CachedScores(nan, "JPEG", (1, 1)), fingerprint),
        "a score above 1": encode(
            CachedScores.of(np.full(1000, 2.0, np.float32), "PNG", (1, 1)), fingerprint
        ),
        "format length 0": good[: struct.calcsize("<4sB16sIII")] + b"\x00" + good[38:],
    }


@pytest.mark.parametrize("name", list(_corruptions()))
def test_a_damaged_or_foreign_value_is_refused(name: str) -> None:
    with pytest.raises(BadEntryError):
        decode(_corruptions()[name], identity().fingerprint(), 1000)


# --- the in-process LRU ---------------------------------------------------------------------------


def test_the_lru_is_bounded_in_bytes_and_drops_the_least_recently_used() -> None:
    one = entry().held_bytes + len("k0")
    seen: list[tuple[int, int]] = []
    tier = LocalTier(3 * one, on_change=lambda held, n: seen.append((held, n)))
    for i in range(3):
        tier.put(f"k{i}", entry(seed=i))
    assert tier.get("k0") is not None  # k0 is now the most recently used
    tier.put("k3", entry(seed=3))
    assert tier.get("k1") is None, "the least recently used went first"
    assert all(tier.get(k) is not None for k in ("k0", "k2", "k3"))
    assert tier.held_bytes <= 3 * one
    assert seen[-1] == (tier.held_bytes, 3)


def test_an_entry_larger_than_the_tier_is_not_kept() -> None:
    tier = LocalTier(100)
    tier.put("k", entry())
    assert len(tier) == 0
    assert tier.held_bytes == 0


def test_replacing_an_entry_does_not_count_it_twice() -> None:
    tier = LocalTier(10**6)
    tier.put("k", entry(seed=1))
    held = tier.held_bytes
    tier.put("k", entry(seed=2))
    assert tier.held_bytes == held
    assert len(tier) == 1


# --- the circuit breaker ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_and_probes_once_after_a_while() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=3, open_s=2.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.closed
    breaker.failure()
    assert not breaker.closed
    assert not breaker.allow()
    clock.now += 2.1
    assert breaker.allow(), "one probe once open_s has passed"
    assert not breaker.allow(), "only one at a time"
    breaker.failure()
    assert not breaker.allow(), "a failed probe opens it again at once"
    clock.now += 2.1
    assert breaker.allow()
    breaker.success()
    assert breaker.closed
    assert breaker.allow()


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures_to_open=3, clock=Clock())
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert breaker.closed


# --- SERVING_CACHE_REDIS_URL -----------------------------------------------------------------


def test_a_redis_url_is_read_and_shown_without_its_password() -> None:
    address = parse_redis_url(f"rediss://user:{PASSWORD.replace('/', '%2F')}@cache.example:6380/2")
    assert (address.host, address.port, address.db, address.tls) == ("cache.example", 6380, 2, True)
    assert (address.username, address.password) == ("user", PASSWORD)
    assert address.shown() == "rediss://cache.example:6380/2"
    plain = parse_redis_url("redis://10.0.0.7")
    assert (plain.port, plain.db, plain.password, plain.tls) == (6379, 0, None, False)


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{PASSWORD}@cache-7:6379/0",
        f"redis://:{PASSWORD}@:6379/0",
        f"redis://:{PASSWORD}@cache-7:99999/0",
        f"redis://:{PASSWORD}@cache-7:port/0",
        f"redis://:{PASSWORD}@cache-7:6379/zero",
        f"redis://:{PASSWORD}@cache-7:6379/0?timeout=1",
        f"{PASSWORD}",
    ],
)
def test_a_malformed_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValueError, match=r".") as raised:
        parse_redis_url(url)
    assert PASSWORD not in str(raised.value)
    assert "cache-7" not in str(raised.value), "the URL is not quoted, not even its host"


# --- single-flight -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_identical_work_arriving_together_runs_once() -> None:
    coalesced: list[int] = []
    flights = Flights(on_coalesced=lambda: coalesced.append(1))
    runs = 0
    release = asyncio.Event()

    async def work() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "scores"

    deadline = time.monotonic() + 10
    tasks = [asyncio.create_task(flights.run("k", work, deadline)) for _ in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks)
    assert runs == 1
    assert sorted(led for _, led in results) == [False, False, False, False, True]
    assert {value for value, _ in results} == {"scores"}
    assert len(coalesced) == 4
    assert len(flights) == 0


@pytest.mark.anyio
async def test_the_images_own_error_is_shared_and_the_leaders_own_is_not() -> None:
    flights = Flights()
    release = asyncio.Event()
    runs = 0

    async def invalid() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        raise InvalidImageError("not an image")

    deadline = time.monotonic() + 10
    tasks = [asyncio.create_task(flights.run("bad", invalid, deadline)) for _ in range(3)]
    await asyncio.sleep(0.05)
    release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, InvalidImageError) for o in outcomes)
    assert runs == 1, "the same bytes fail the same way: nobody tries again"

    attempts = 0
    gate = asyncio.Event()

    async def busy_once() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await gate.wait()
            raise MemoryBusyError("the leader's own trouble")
        return "scores"

    leader = asyncio.create_task(flights.run("k", busy_once, deadline))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(flights.run("k", busy_once, deadline))
    await asyncio.sleep(0.01)
    gate.set()
    with pytest.raises(MemoryBusyError):
        await leader
    assert await follower == ("scores", True), "the follower took the lead and succeeded"


@pytest.mark.anyio
async def test_a_follower_gives_up_at_its_own_deadline_and_the_leader_goes_on() -> None:
    flights = Flights()
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "scores"

    leader = asyncio.create_task(flights.run("k", slow, time.monotonic() + 10))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceededError):
        await flights.run("k", slow, time.monotonic() + 0.05)
    release.set()
    assert await leader == ("scores", True)


@pytest.mark.anyio
async def test_a_cancelled_leader_hands_over_to_a_follower() -> None:
    flights = Flights()
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return "scores"

    leader = asyncio.create_task(flights.run("k", work, None))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(flights.run("k", work, None))
    await asyncio.sleep(0.01)
    leader.cancel()  # its client went away
    assert await follower == ("scores", True)
