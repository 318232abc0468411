"""The decode memory budget: its cost model, its reservations and waiters, how its size is
chosen, the cgroup limit it is derived from, and the service's answers (413, 503 memory_busy,
waiting within the deadline)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.images.decode import open_image
from app.images.decode_cost import (
    FALLBACK_BUDGET_BYTES,
    MIN_BUDGET_BYTES,
    budget_bytes,
    decode_peak_bytes,
)
from app.main import create_app
from app.memory.budget import MIB, MemoryBudget
from app.memory.cgroup import cgroup_memory_limit, resident_bytes
from conftest import ROOT, make_settings, wait_ready
from harness.big_images import IMAGES, png
from helpers.images import encode, photo, photo_bytes
from helpers.metrics import scrape

RESULTS = ROOT / "bench" / "results" / "decode_memory.json"


def cost(data: bytes) -> int:
    opened = open_image(data, max_pixels=10**9, draft_short_side=256)
    try:
        return decode_peak_bytes(opened, data)
    finally:
        opened.image.close()


# --- the cost model -------------------------------------------------------------------------


def test_cost_follows_the_pixels_and_the_mode() -> None:
    small = cost(png(500))
    big = cost(png(1000))
    assert 3.5 * (small - 4 * MIB) < big - 4 * MIB < 4.5 * (small - 4 * MIB)
    rgb, gray, rgba = (
        cost(png(1000)),
        cost(png(1000, colour_type=0)),
        cost(png(1000, colour_type=6)),
    )
    assert rgb < gray < rgba  # L needs an RGB copy; alpha is composited over white
    assert cost(png(1000, rotated=True)) > rgb  # a transposition holds two copies for a moment


def test_progressive_jpeg_pays_for_its_coefficients_at_full_size() -> None:
    img = photo("coffee").resize((4000, 3000))
    baseline, progressive = encode(img, "JPEG"), encode(img, "JPEG", progressive=True)
    # Both decode drafted to ~1000x750; only the progressive one buffers 12 MP of coefficients.
    assert cost(progressive) > cost(baseline) + 2 * 12_000_000


def test_webp_costs_more_than_png_per_pixel() -> None:
    img = Image.new("RGB", (800, 800))
    assert cost(encode(img, "WEBP", lossless=True)) > cost(encode(img, "PNG")) + 8 * 640_000


@pytest.mark.slow
def test_reservations_cover_every_measured_peak() -> None:
    """bench/experiments/decode_memory.py measured each decoder's real peak (RSS high-water mark
    in a fresh process); the server must reserve at least that much for each of those images."""
    recorded = json.loads(RESULTS.read_text())["results"]
    assert {row["image"] for row in recorded} == set(IMAGES), (
        "rerun bench/experiments/decode_memory.py"
    )
    for row in recorded:
        assert cost(IMAGES[row["image"]][2]()) >= row["peak_growth_bytes"], row["image"]


# --- reservations and waiters ---------------------------------------------------------------


def test_reservations_add_up_and_refuse_what_does_not_fit() -> None:
    seen: list[int] = []
    budget = MemoryBudget(100, on_change=seen.append)
    assert budget.try_acquire(60)
    assert not budget.try_acquire(50)
    assert budget.try_acquire(40)
    budget.release(60)
    budget.release(40)
    assert budget.in_use == 0
    assert seen[-1] == 0
    assert max(seen) == 100


@pytest.mark.anyio
async def test_waiters_are_served_in_order_when_room_frees_up() -> None:
    budget = MemoryBudget(100)
    assert budget.try_acquire(100)
    order: list[str] = []

    async def wait(name: str, need: int) -> None:
        assert await budget.acquire(need, deadline=None)
        order.append(name)

    first = asyncio.create_task(wait("big", 80))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait("small", 10))
    await asyncio.sleep(0)
    assert not budget.try_acquire(1)  # nobody jumps the queue
    threading.Thread(target=budget.release, args=(100,)).start()  # from a decode thread
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert order == ["big", "small"]
    assert budget.in_use == 90


@pytest.mark.anyio
async def test_a_waiter_gives_up_at_its_deadline_and_leaves_no_trace() -> None:
    budget = MemoryBudget(100)
    assert budget.try_acquire(100)
    # It returns False by itself, nobody having released anything (wait_for only guards a hang).
    assert not await asyncio.wait_for(
        budget.acquire(50, deadline=time.monotonic() + 0.1), timeout=60
    )
    budget.release(100)
    assert budget.in_use == 0
    assert budget.try_acquire(100)  # no stale waiter blocks the queue


@pytest.mark.anyio
async def test_a_cancelled_waiter_releases_what_it_was_granted() -> None:
    budget = MemoryBudget(100)
    assert budget.try_acquire(100)
    task = asyncio.create_task(budget.acquire(70, deadline=None))
    await asyncio.sleep(0)
    budget.release(100)  # grants the waiter: delivery is scheduled on the loop...
    task.cancel()  # ...but the client went away first
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    assert budget.in_use == 0


# --- the budget's size ----------------------------------------------------------------------


def test_budget_size_rules() -> None:
    assert budget_bytes(10_000_000, limit=1 << 40, baseline=0)[0] == 40_000_000  # the setting
    assert budget_bytes(0, limit=None, baseline=500 * MIB)[0] == FALLBACK_BUDGET_BYTES
    assert budget_bytes(0, limit=1536 * MIB, baseline=1000 * MIB)[0] == 268 * MIB
    assert budget_bytes(0, limit=1100 * MIB, baseline=1090 * MIB)[0] == MIN_BUDGET_BYTES


def _tree(tmp_path: Path, files: dict[str, str], own: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc-cgroup"
    proc.write_text(own)
    return root, proc


def test_cgroup_v2_limit_is_the_tightest_up_the_tree(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        {
            "cgroup.controllers": "cpu memory",
            "memory.max": "max",
            "kubepods/memory.max": "4294967296",
            "kubepods/pod1/memory.max": "1610612736",
            "kubepods/pod1/app/memory.max": "max",
        },
        "0::/kubepods/pod1/app\n",
    )
    assert cgroup_memory_limit(root, proc) == 1610612736


def test_cgroup_v2_in_a_namespace_reads_the_root(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path, {"cgroup.controllers": "memory", "memory.max": "2147483648"}, "0::/\n"
    )
    assert cgroup_memory_limit(root, proc) == 2147483648


def test_cgroup_v1_limit_and_unlimited(tmp_path: Path) -> None:
    unlimited = str(9223372036854771712)
    root, proc = _tree(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": unlimited,
            "memory/docker/abc/memory.limit_in_bytes": "1073741824",
        },
        "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n",
    )
    assert cgroup_memory_limit(root, proc) == 1073741824
    # Without a cgroup namespace the container's path does not exist under its own mount: the
    # mount root (the container's cgroup) is read instead.
    root2, proc2 = _tree(
        tmp_path / "b", {"memory/memory.limit_in_bytes": "536870912"}, "4:memory:/elsewhere\n"
    )
    assert cgroup_memory_limit(root2, proc2) == 536870912
    root3, proc3 = _tree(tmp_path / "c", {"memory/memory.limit_in_bytes": unlimited}, "4:memory:/")
    assert cgroup_memory_limit(root3, proc3) is None


def test_no_cgroup_at_all(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path / "none", tmp_path / "none-either") is None
    assert (resident_bytes() or 0) > 10 * MIB


# --- the service ----------------------------------------------------------------------------

BUDGET_PIXELS = 4_000_000  # 16 MB: a 512x600 photo fits, a 2000x2000 PNG does not


@pytest.fixture(scope="module")
def budget_client() -> Iterator[TestClient]:
    settings = make_settings(max_pixels_in_flight=BUDGET_PIXELS, decode_workers=2)
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as client:
        wait_ready(client)
        yield client


def test_an_image_larger_than_the_whole_budget_is_413(budget_client: TestClient) -> None:
    response = budget_client.post(
        "/predict", content=png(2000), headers={"content-type": "image/png"}
    )
    assert response.status_code == 413
    body = response.json()
    assert body["error"]["code"] == "image_too_large"
    assert "decode memory budget" in body["error"]["message"]


def test_a_full_budget_means_503_memory_busy_at_the_deadline(budget_client: TestClient) -> None:
    budget = budget_client.app.state.service.decoder.budget  # type: ignore[attr-defined]
    assert budget.capacity == BUDGET_PIXELS * 4
    assert budget.try_acquire(budget.capacity)  # other images hold all of it
    try:
        response = budget_client.post(
            "/predict",
            content=photo_bytes("grace_hopper"),
            headers={"content-type": "image/jpeg", "X-Request-Timeout": "0.3"},
        )
    finally:
        budget.release(budget.capacity)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "memory_busy"
    assert int(response.headers["retry-after"]) >= 1
    samples = scrape(budget_client)
    assert samples['rejected_requests_total{reason="decode_memory"}'] == 1
    assert samples["decode_memory_in_flight_bytes{}"] == 0
    assert samples["decode_memory_budget_bytes{}"] == BUDGET_PIXELS * 4


def test_an_image_waits_for_room_within_its_deadline(budget_client: TestClient) -> None:
    budget = budget_client.app.state.service.decoder.budget  # type: ignore[attr-defined]
    assert budget.try_acquire(budget.capacity)
    timer = threading.Timer(0.5, budget.release, args=(budget.capacity,))
    timer.start()
    started = time.monotonic()
    response = budget_client.post(
        "/predict",
        content=photo_bytes("grace_hopper"),
        headers={"content-type": "image/jpeg", "X-Request-Timeout": "10"},
    )
    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 0.4  # it waited for the release
    assert budget.in_use == 0


def test_every_reservation_is_given_back(budget_client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (900, 900), (10, 20, 30, 128)).save(buf, "PNG")
    for data in (photo_bytes("grace_hopper"), buf.getvalue(), b"not an image", png(2000)):
        budget_client.post("/predict", content=data, headers={"content-type": "image/png"})
    assert budget_client.app.state.service.decoder.budget.in_use == 0  # type: ignore[attr-defined]
