"""The release as installed: pods Ready under the restricted Pod Security Standard, as the
image's non-root user on a read-only root; `helm test` passes; a real photograph through the
Service comes back with its top 5."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from e2e.kube import Cluster, is_ready

# Prints the uid and gid, then tries to write to the root filesystem.
_WHO_AND_WRITE = (
    "import errno, os\n"
    "print(os.getuid(), os.getgid())\n"
    "try:\n"
    "    open('/e2e-probe', 'w').close(); print('writable')\n"
    "except OSError as e:\n"
    "    print('read-only' if e.errno == errno.EROFS else 'error %d' % e.errno)\n"
)


def test_pods_ready_as_non_root_on_a_read_only_root_under_restricted_pss(
    release_ready: Cluster, figures: dict[str, Any]
) -> None:
    cluster = release_ready
    labels = cluster.get("namespace", cluster.namespace, namespace="default")["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels
    # The serving pods: one still terminating from an earlier rollout (a re-run on a cluster
    # that was up already) is on its way out, not serving.
    pods = [p for p in cluster.pods() if not p["metadata"].get("deletionTimestamp")]
    assert pods, "no pods"
    seen = []
    for pod in pods:
        assert is_ready(pod), pod["metadata"]["name"]
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        [container] = [c for c in spec["containers"] if c["name"] != "istio-proxy"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        out = cluster.kubectl_(
            "exec",
            "-n",
            cluster.namespace,
            pod["metadata"]["name"],
            "-c",
            container["name"],
            "--",
            "python",
            "-c",
            _WHO_AND_WRITE,
        ).split()
        assert out == ["10001", "10001", "read-only"], out
        seen.append(pod["metadata"]["name"])
    figures["pods"] = {"ready": seen, "uid_gid": "10001:10001", "root_filesystem": "read-only"}


def test_helm_test_passes(release_ready: Cluster, figures: dict[str, Any]) -> None:
    started = time.monotonic()
    out = release_ready.helm_("test", release_ready.release, "--timeout", "5m", timeout=360)
    assert "Phase:          Succeeded" in out or "Phase: Succeeded" in out, out
    figures["helm_test"] = {"passed": True, "seconds": round(time.monotonic() - started, 1)}


def test_a_real_photo_through_the_service_gets_its_top_5(
    release_ready: Cluster, base_url: str, photo: bytes, figures: dict[str, Any]
) -> None:
    ready = httpx.get(f"{base_url}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    response = httpx.post(
        f"{base_url}/predict", files={"file": ("grace_hopper.jpg", photo, "image/jpeg")}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    predictions = body["predictions"]
    assert len(predictions) == 5
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(p["label"], str) and p["label"] for p in predictions)
    assert body["image"] == {"format": "JPEG", "width": 512, "height": 600}
    weights = body["weights"]
    labels = [p["label"] for p in predictions]
    if weights != "random":
        # The real ImageNet weights (the workflow's image): the golden answer.
        assert "military uniform" in labels, labels
    figures["predict"] = {
        "service": base_url,
        "weights": weights,
        "top5": labels,
        "inference_ms": body["timing_ms"]["inference"],
        "total_ms": body["timing_ms"]["total"],
    }


# Inside the pod: is torch importable, and what does the server say it loaded?
_TORCH_AND_SOURCE = (
    "import importlib.util as u, json, os, urllib.request\n"
    "port = os.environ.get('SERVING_PORT', '8000')\n"
    "ready = json.load(urllib.request.urlopen('http://127.0.0.1:' + port + '/ready'))\n"
    "print(u.find_spec('torch') is not None, ready['model_source'], ready['backend'])\n"
)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_pods_serve_the_build_time_model_without_torch(
    release_ready: Cluster, figures: dict[str, Any]
) -> None:
    """The CPU image: no torch in it, the IR baked at build time loaded by every pod. And how
    long each pod took from its creation (and from its scheduling) to Ready, the image already
    on the node: the figure the image's size and start-up were cut for (recorded, not
    asserted: a busy node is slower)."""
    cluster = release_ready
    timings = []
    for pod in cluster.pods():
        name = pod["metadata"]["name"]
        [container] = [c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy"]
        out = cluster.kubectl_(
            "exec", "-n", cluster.namespace, name, "-c", container["name"], "--",
            "python", "-c", _TORCH_AND_SOURCE,
        ).split()  # fmt: skip
        assert out == ["False", "ir", "openvino"], (name, out)
        conditions = {c["type"]: c["lastTransitionTime"] for c in pod["status"]["conditions"]}
        created = _seconds(pod["metadata"]["creationTimestamp"])
        ready = _seconds(conditions["Ready"])
        timings.append(
            {
                "pod": name,
                "created_to_ready_s": ready - created,
                "scheduled_to_ready_s": ready - _seconds(conditions["PodScheduled"]),
            }
        )
    figures["image_startup"] = {
        "torch_in_image": False,
        "model_source": "ir",
        "pods": timings,
        "note": "Kubernetes timestamps have 1 s resolution",
    }
