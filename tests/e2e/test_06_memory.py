"""A burst of 64 concurrent legal but large images against the Service must not OOM-kill a pod
with values-dev.yaml's memory limit: every answer is 200, 503 or 504, no container restarts, and
the service answers normally afterwards. Two kinds of large: a 7000x7000 PNG (49 megapixels,
under the default pixel cap, ~150 KB on the wire: the decode budget's case) and a 9.8 MB JPEG
of noise (just under the upload cap, 8.7 megapixels: the body budget's case)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from e2e.kube import Cluster, restart_count
from harness.big_images import noise_jpeg

BURST = 64
SIDE = 7000


def _large_png() -> bytes:
    # Flat colour: deflate squeezes 147 MB of pixels into ~150 KB; the decoder still has to
    # produce every one of them.
    buffer = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), (120, 140, 160)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("kind", "make", "content_type"),
    [("large_png", _large_png, "image/png"), ("noise_jpeg_10mb", noise_jpeg, "image/jpeg")],
)
def test_a_burst_of_64_large_images_kills_no_pod(
    release_ready: Cluster,
    base_url: str,
    photo: bytes,
    figures: dict[str, Any],
    kind: str,
    make: Callable[[], bytes],
    content_type: str,
) -> None:
    cluster = release_ready
    image = make()
    restarts = {p["metadata"]["name"]: restart_count(p) for p in cluster.pods()}
    limit = cluster.pods()[0]["spec"]["containers"][0]["resources"]["limits"]["memory"]

    def post(_: int) -> str:
        try:
            response = httpx.post(
                f"{base_url}/predict",
                content=image,
                # no-store: 64 copies of one image would otherwise be decoded once
                # (single-flight); the burst is about decoding them all at once.
                headers={"Content-Type": content_type, "Cache-Control": "no-store"},
                timeout=120,
            )
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)

    with ThreadPoolExecutor(BURST) as pool:
        statuses = Counter(pool.map(post, range(BURST)))
    after = {p["metadata"]["name"]: p for p in cluster.pods()}
    oom = [
        name
        for name, pod in after.items()
        for s in pod["status"].get("containerStatuses") or []
        if (s.get("lastState", {}).get("terminated") or {}).get("reason") == "OOMKilled"
    ]
    usage = cluster.raw(f"/apis/metrics.k8s.io/v1beta1/namespaces/{cluster.namespace}/pods")
    # The container's own high-water mark since it started (cgroup v1 or v2), against its limit.
    peaks = {
        name: int(
            cluster.kubectl_(
                "exec",
                "-n",
                cluster.namespace,
                name,
                "--",
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null"
                " || cat /sys/fs/cgroup/memory.peak",
            ).strip()
        )
        for name in after
    }
    figures[f"{kind}_burst"] = {
        "images": BURST,
        "image_bytes": len(image),
        "memory_limit": limit,
        "statuses": dict(statuses),
        "memory_peak_bytes": peaks,
        "memory_after": {
            i["metadata"]["name"]: i["containers"][0]["usage"]["memory"] for i in usage["items"]
        },
    }
    assert not oom, f"OOMKilled: {oom}"
    assert {name: restart_count(after[name]) for name in restarts if name in after} == {
        name: count for name, count in restarts.items() if name in after
    }, "a container restarted during the burst"
    assert set(after) == set(restarts), "pods were replaced during the burst"
    assert set(statuses) <= {"200", "503", "504"}, statuses
    response = httpx.post(
        f"{base_url}/predict", content=photo, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 200, response.text
