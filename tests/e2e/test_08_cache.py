"""The prediction cache on the cluster: values-dev.yaml deploys a Redis beside the release
(cache.redis.enabled; here the local/redis image built from Debian's redis-server), and the
replicas share their answers through it.

- a photo sent through the Service (new connections, so both replicas get some) is inferred
  once in all, counted from every pod's own /metrics;
- deleting the Redis pod under load fails no request (a miss while it is gone, then used
  again);
- ResNetServingCacheRedisDown fires when Redis is scaled to zero and resolves when it is back.
"""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from e2e.kube import Cluster, is_ready, wait_until
from e2e.load import Load

REDIS_ALERT = "ResNetServingCacheRedisDown"
_seed = iter(range(int(time.time()) % 10**6, 10**7))


def unique_jpeg() -> bytes:
    """A JPEG no earlier request sent (the Redis outlives single tests)."""
    pixels = np.random.default_rng(next(_seed)).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def across_pods(cluster: Cluster, name: str, **labels: str) -> dict[str, float]:
    return {
        pod["metadata"]["name"]: sample(cluster.pod_metrics(pod), name, **labels)
        for pod in cluster.ready_pods()
    }


def redis_selector(cluster: Cluster) -> str:
    return f"app.kubernetes.io/instance={cluster.release},app.kubernetes.io/component=cache"


def redis_pods(cluster: Cluster) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.get("pods", "-l", redis_selector(cluster))["items"]
    return pods


def every_pod_sees_redis(cluster: Cluster) -> bool:
    up = across_pods(cluster, "prediction_cache_redis_up")
    return bool(up) and all(v == 1 for v in up.values())


@pytest.mark.timeout(600)
def test_a_photo_sent_to_two_replicas_is_inferred_once(
    release_ready: Cluster, base_url: str, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    assert len(cluster.ready_pods()) >= 2
    wait_until("every pod sees Redis", lambda: every_pod_sees_redis(cluster), 120, 2)
    image = unique_jpeg()
    inferred = across_pods(cluster, "batch_size_sum")
    redis_hits = across_pods(cluster, "prediction_cache_requests_total", tier="redis",
                             result="hit")  # fmt: skip
    answers = []
    for _ in range(16):
        # A new connection each time: the Service spreads them over the replicas.
        headers = {"Content-Type": "image/jpeg", "Connection": "close"}
        response = httpx.post(f"{base_url}/predict", content=image, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        answers.append(response.headers["x-cache"])
        time.sleep(0.2)  # the first answer's write to Redis lands before the next request
    inferred_after = across_pods(cluster, "batch_size_sum")
    redis_hits_after = across_pods(cluster, "prediction_cache_requests_total", tier="redis",
                                   result="hit")  # fmt: skip
    runs = {pod: inferred_after[pod] - inferred.get(pod, 0.0) for pod in inferred_after}
    shared = {pod: redis_hits_after[pod] - redis_hits.get(pod, 0.0) for pod in redis_hits_after}
    assert answers.count("miss") == 1, answers
    assert sum(runs.values()) == 1, f"inferred once in all: {runs}"
    assert sum(1 for v in shared.values() if v > 0) >= 1, f"a replica got it from Redis: {shared}"
    figures["cache_shared"] = {
        "requests": len(answers),
        "replicas": len(runs),
        "inferred_per_pod": runs,
        "redis_hits_per_pod": shared,
        "x_cache": answers,
    }


@pytest.mark.timeout(600)
def test_deleting_the_redis_pod_under_load_fails_no_request(
    release_ready: Cluster, base_url: str, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    wait_until("every pod sees Redis", lambda: every_pod_sees_redis(cluster), 120, 2)
    images = [unique_jpeg() for _ in range(60)]
    [old] = redis_pods(cluster)
    old_name = old["metadata"]["name"]

    def new_redis_ready() -> bool:
        return any(p["metadata"]["name"] != old_name and is_ready(p) for p in redis_pods(cluster))

    with Load(base_url, images[0], clients=4, cache_control=None,
              more_images=tuple(images[1:])) as load:  # fmt: skip
        time.sleep(5)
        deleted_at = time.monotonic()
        cluster.kubectl_("delete", "pod", old_name, "-n", cluster.namespace, "--wait=false")
        wait_until("a new Redis pod Ready", new_redis_ready, 180, 1)
        redis_back = time.monotonic()
        wait_until("every pod uses Redis again", lambda: every_pod_sees_redis(cluster), 60, 1)
        used_again = time.monotonic()
        time.sleep(5)
        load.stop()
    summary = load.summary()
    assert summary["failed"] == 0, summary["failures"]
    assert summary["ok"] > 0
    figures["cache_redis_pod_deleted"] = {
        "load": summary,
        "seconds_to_new_redis_ready": round(redis_back - deleted_at, 1),
        "seconds_until_pods_use_it": round(used_again - deleted_at, 1),
    }


def _loaded_for(cluster: Cluster) -> float | None:
    groups = cluster.prometheus("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    duration = rules.get(REDIS_ALERT, {}).get("duration")
    return None if duration is None else float(duration)


def _firing(cluster: Cluster) -> bool:
    alerts = cluster.prometheus("/api/v1/alerts")["alerts"]
    return any(a["labels"].get("alertname") == REDIS_ALERT and a["state"] == "firing"
               for a in alerts)  # fmt: skip


@pytest.mark.timeout(900)
def test_the_redis_alert_fires_and_resolves(
    release_ready: Cluster, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    [redis] = cluster.get("deployment", "-l", redis_selector(cluster))["items"]
    deployment = redis["metadata"]["name"]
    # The chart waits 3 minutes; the test shortens it, as test_05 does for the service alert.
    cluster.upgrade("prometheusRule.alerts.cacheRedisDown.for=20s")
    try:
        wait_until(f"{REDIS_ALERT} reloaded with for: 20s",
                   lambda: _loaded_for(cluster) == 20, 240, 3)  # fmt: skip
        assert not _firing(cluster)
        cluster.kubectl_("scale", f"deployment/{deployment}", "-n", cluster.namespace,
                         "--replicas=0")  # fmt: skip
        down_at = time.monotonic()
        wait_until(f"{REDIS_ALERT} firing", lambda: _firing(cluster), 300, 3)
        fired_at = time.monotonic()
        cluster.kubectl_("scale", f"deployment/{deployment}", "-n", cluster.namespace,
                         "--replicas=1")  # fmt: skip
        wait_until("Redis Ready", lambda: any(is_ready(p) for p in redis_pods(cluster)), 180, 1)
        back_at = time.monotonic()
        wait_until(f"{REDIS_ALERT} resolved", lambda: not _firing(cluster), 300, 3)
        resolved_at = time.monotonic()
    finally:
        cluster.kubectl_("scale", f"deployment/{deployment}", "-n", cluster.namespace,
                         "--replicas=1")  # fmt: skip
        cluster.upgrade("prometheusRule.alerts.cacheRedisDown.for=3m")
    figures["cache_redis_alert"] = {
        "for": "20s",
        "seconds_to_fire": round(fired_at - down_at, 1),
        "seconds_to_resolve_after_ready": round(resolved_at - back_at, 1),
    }
