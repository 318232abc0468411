"""The HorizontalPodAutoscaler, fed by metrics-server: turned on with `helm upgrade`, it scales
the Deployment out under load and back in once the load stops, never outside its bounds."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

from e2e.kube import Cluster, wait_until
from e2e.load import Load

# Enough clients to keep every pod's CPU far above the 70% target of its request.
CLIENTS = 8


def _hpa(cluster: Cluster) -> dict[str, Any]:
    items = cluster.get("hpa", "-l", f"app.kubernetes.io/instance={cluster.release}")["items"]
    assert len(items) == 1, "no HorizontalPodAutoscaler for the release"
    hpa: dict[str, Any] = items[0]
    return hpa


@pytest.mark.timeout(1200)
def test_hpa_scales_out_under_load_and_back_in_within_its_bounds(
    release_ready: Cluster, base_url: str, photo: bytes, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    cluster.upgrade("autoscaling.enabled=true")
    try:
        hpa = _hpa(cluster)
        low, high = int(hpa["spec"]["minReplicas"]), int(hpa["spec"]["maxReplicas"])
        assert low < high
        # metrics-server must feed it before it can decide anything.
        wait_until(
            "the HPA's first CPU reading",
            lambda: _hpa(cluster).get("status", {}).get("currentMetrics") or None,
            180,
            2,
        )
        replicas_seen: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(AssertionError):
                    replicas_seen.append(int(cluster.deployment()["spec"]["replicas"]))
                stop.wait(1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with Load(base_url, photo, clients=CLIENTS) as load:
            peak = wait_until(
                "the HPA to scale out",
                lambda: (
                    n
                    if (n := int(_hpa(cluster)["status"].get("desiredReplicas", 0))) > low
                    else None
                ),
                420,
                2,
            )
            out_at = time.monotonic()
            # The new pods must come up and serve (the Deployment really grew).
            wait_until(
                f"more than {low} ready pods", lambda: len(cluster.ready_pods()) > low, 300, 2
            )
            load.stop()
        summary = load.summary()
        load_stopped = time.monotonic()
        wait_until(
            f"the HPA to scale back in to {low}",
            lambda: int(cluster.deployment()["spec"]["replicas"]) == low,
            600,
            2,
        )
        in_at = time.monotonic()
        stop.set()
        sampler.join(10)
        figures["hpa"] = {
            "min": low,
            "max": high,
            "peak_desired": peak,
            "replicas_seen": sorted(set(replicas_seen)),
            "seconds_to_scale_out": round(out_at - started, 1),
            "seconds_to_scale_in_after_load": round(in_at - load_stopped, 1),
            "load": summary,
        }
        assert replicas_seen
        assert all(low <= n <= high for n in replicas_seen), replicas_seen
        assert max(replicas_seen) > low
    finally:
        cluster.upgrade("autoscaling.enabled=false")
        cluster.wait_rolled_out()
