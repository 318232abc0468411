"""A container killed with SIGKILL under load (no drain: the OOM killer's way): the failures
are counted and reported, the container restarts, and readiness keeps traffic away from it
until its model is loaded and warm: no request is ever answered `not_ready` by a pod that the
Service should not have sent it to, and once it is back, nothing fails."""

from __future__ import annotations

import time
from typing import Any

import pytest

from e2e.kube import Cluster, is_ready, restart_count, wait_until
from e2e.load import Load

CLIENTS = 4


def _container_pid_command(container_id: str) -> str:
    # containerd's view from the node: the task's PID is the container's PID 1 (python). A
    # signal from inside the pod cannot SIGKILL its own PID 1; from the node it can.
    return (
        f"pid=$(ctr -n k8s.io tasks ls | awk '$1 == \"{container_id}\" {{ print $2 }}'); "
        '[ -n "$pid" ] && kill -9 "$pid" && echo "$pid"'
    )


@pytest.mark.timeout(600)
def test_a_sigkilled_container_restarts_and_gets_traffic_only_once_warm(
    release_ready: Cluster, base_url: str, photo: bytes, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    victim = cluster.ready_pods()[0]
    name = victim["metadata"]["name"]
    restarts_before = restart_count(victim)
    container_id = victim["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]

    def pod() -> dict[str, Any]:
        current: dict[str, Any] = cluster.get("pod", name)
        return current

    with Load(base_url, photo, clients=CLIENTS) as load:
        time.sleep(3)
        killed_at = time.monotonic()
        pid = cluster.node_shell(_container_pid_command(container_id)).strip()
        assert pid.isdigit(), f"could not find the container's process on the node: {pid!r}"
        wait_until("the restart to be counted", lambda: restart_count(pod()) > restarts_before, 120)
        not_ready_seen = wait_until(
            "the restarted container to be seen not ready", lambda: not is_ready(pod()), 60, 0.2
        )
        ready_again = wait_until("the pod Ready again", lambda: is_ready(pod()) or None, 300, 0.5)
        back_at = time.monotonic()
        time.sleep(8)  # traffic to the warm pod again: none of it may fail
        load.stop()
    assert not_ready_seen
    assert ready_again
    outcomes = load.snapshot()
    failures = [o for o in outcomes if o.status != 200]
    after_back = [o for o in failures if o.started > back_at]
    not_ready_answers = [o for o in failures if o.error == "not_ready"]
    summary = load.summary()
    figures["sigkill"] = {
        "load": summary,
        "failed_requests": len(failures),
        "failure_kinds": summary["failures"],
        "seconds_until_ready_again": round(back_at - killed_at, 1),
        "restart_count": restart_count(pod()),
    }
    assert restart_count(pod()) == restarts_before + 1
    # Only requests that were on the killed process, or sent to it before its endpoint was
    # withdrawn, may fail, and those fail at the connection: never an answer from a cold pod.
    assert not not_ready_answers, f"{len(not_ready_answers)} requests reached a pod still loading"
    assert all(o.status is None for o in failures), summary["failures"]
    assert not after_back, f"{len(after_back)} requests failed after the pod was Ready again"
