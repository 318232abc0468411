"""Changes under continuous load through the Service: a `helm upgrade` that changes a setting
rolls the pods (the ConfigMap checksum) without a failed request and without ever dropping
below the replica count; deleting a pod (SIGTERM, drain) fails nothing; `helm rollback`
restores the previous revision, also under load."""

from __future__ import annotations

import time
from typing import Any

import pytest

from e2e.kube import Cluster
from e2e.load import Load, ReadyWatcher

# Clients kept busy during every change: enough to always have requests in flight on each pod.
CLIENTS = 4
# A setting whose change must reach the pods (and roll them) without changing what they answer.
SETTING = "SERVING_MAX_BATCH_DELAY_MS"


def _config_value(cluster: Cluster, key: str) -> str | None:
    """The setting in the ConfigMap the serving container takes its environment from (the
    release's label also marks the dashboards' ConfigMaps, so it cannot pick one)."""
    [container] = cluster.deployment()["spec"]["template"]["spec"]["containers"][:1]
    [name] = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e][:1]
    value: str | None = cluster.get("configmap", name)["data"].get(key)
    return value


def _pod_names(cluster: Cluster) -> set[str]:
    """The pods that serve or will: those being deleted (draining) do not count."""
    return {
        p["metadata"]["name"] for p in cluster.pods() if not p["metadata"].get("deletionTimestamp")
    }


def _checksum(cluster: Cluster) -> str:
    annotations = cluster.deployment()["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["checksum/config"])


def _settle(load: Load, seconds: float = 3.0) -> None:
    """Keep the load on a little longer: failures often come just after a change 'finished'."""
    time.sleep(seconds)
    load.stop()


@pytest.mark.timeout(900)
def test_helm_upgrade_of_a_setting_rolls_the_pods_under_load_with_zero_failures(
    release_ready: Cluster, base_url: str, photo: bytes, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    replicas = int(cluster.deployment()["spec"]["replicas"])
    before_pods, before_checksum = _pod_names(cluster), _checksum(cluster)
    revision = cluster.helm_revision()
    started = time.monotonic()
    with ReadyWatcher(cluster) as watcher, Load(base_url, photo, clients=CLIENTS) as load:
        time.sleep(2)  # requests flowing before the change
        cluster.upgrade(f"config.{SETTING}=3.0")
        cluster.wait_rolled_out()
        _settle(load)
    summary = load.summary()
    figures["helm_upgrade"] = {
        "load": summary,
        "rollout_seconds": round(time.monotonic() - started, 1),
        "min_ready_pods": watcher.minimum,
        "replicas": replicas,
    }
    assert cluster.helm_revision() == revision + 1
    assert _config_value(cluster, SETTING) == "3.0"
    assert _checksum(cluster) != before_checksum, "the setting did not change the pod template"
    assert not (_pod_names(cluster) & before_pods), "some pods were not replaced"
    assert summary["requests"] > 0
    assert summary["failed"] == 0, summary
    assert watcher.minimum >= replicas, f"ready pods fell to {watcher.minimum} of {replicas}"


@pytest.mark.timeout(600)
def test_deleting_a_pod_under_load_drains_it_with_zero_failures(
    release_ready: Cluster, base_url: str, photo: bytes, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    replicas = int(cluster.deployment()["spec"]["replicas"])
    victim = cluster.ready_pods()[0]["metadata"]["name"]
    started = time.monotonic()
    with ReadyWatcher(cluster) as watcher, Load(base_url, photo, clients=CLIENTS) as load:
        time.sleep(2)
        # Graceful: preStop pause, SIGTERM, in-flight and queued requests answered, exit 0.
        cluster.kubectl_(
            "delete", "pod", victim, "-n", cluster.namespace, "--wait=true", timeout=120
        )
        cluster.wait_rolled_out()
        while len(cluster.ready_pods()) < replicas:
            time.sleep(0.5)
        _settle(load)
    summary = load.summary()
    figures["delete_pod"] = {
        "load": summary,
        "seconds_to_full_strength": round(time.monotonic() - started, 1),
        "min_ready_pods": watcher.minimum,
    }
    assert victim not in _pod_names(cluster)
    assert summary["requests"] > 0
    assert summary["failed"] == 0, summary


@pytest.mark.timeout(900)
def test_helm_rollback_restores_the_previous_revision_under_load(
    release_ready: Cluster, base_url: str, photo: bytes, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    replicas = int(cluster.deployment()["spec"]["replicas"])
    revision = cluster.helm_revision()
    previous = revision - 1
    assert previous >= 1, "nothing to roll back to: the upgrade test runs first"
    changed = _config_value(cluster, SETTING)
    started = time.monotonic()
    with ReadyWatcher(cluster) as watcher, Load(base_url, photo, clients=CLIENTS) as load:
        time.sleep(2)
        cluster.helm_(
            "rollback", cluster.release, str(previous), "--wait", "--timeout", "10m", timeout=660
        )
        cluster.wait_rolled_out()
        _settle(load)
    summary = load.summary()
    figures["helm_rollback"] = {
        "load": summary,
        "seconds": round(time.monotonic() - started, 1),
        "min_ready_pods": watcher.minimum,
        "to_revision": previous,
    }
    assert cluster.helm_revision() == revision + 1  # a rollback is a new revision
    assert _config_value(cluster, SETTING) != changed, "the rollback did not restore the setting"
    assert summary["requests"] > 0
    assert summary["failed"] == 0, summary
    assert watcher.minimum >= replicas, f"ready pods fell to {watcher.minimum} of {replicas}"
