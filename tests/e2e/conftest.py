"""The e2e suite's fixtures: which cluster, which release, the base URL of its Service, the
photo, and the figures every test records (written to bench/results/e2e.json by default).

Runs against any kubeconfig where the chart is installed (scripts/e2e.sh sets these):
  E2E_KUBECONFIG   kubeconfig of the cluster (required: without it the suite is skipped)
  E2E_NAMESPACE    release namespace (resnet)          E2E_RELEASE  release name (resnet-serving)
  E2E_CHART        the chart to `helm upgrade` with (.tools/cluster/chart, or charts/resnet-serving)
  E2E_KUBECTL, E2E_HELM   binaries (default: .tools/cluster/bin/kubectl, .tools/bin/helm, PATH)
  E2E_NODE_EXEC    prefix that runs a command on the node (empty: this machine; kind:
                   "docker exec ci-control-plane")
  E2E_BASE_URL     the Service from here (default: http://<node InternalIP>:<NodePort>)
  E2E_GRPC_TARGET  host:port of the Service's gRPC port from here (default: <node InternalIP>:
                   the NodePort of the Service port `grpc`)
  E2E_RESULTS      where the figures go (bench/results/e2e.json); E2E_SETUP_JSON: figures of
                   the set-up (cluster start, image build) merged into them
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.kube import Cluster, KubeError, wait_until

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
            if not os.environ.get("E2E_KUBECONFIG"):
                item.add_marker(
                    pytest.mark.skip(reason="needs a cluster: scripts/e2e.sh (E2E_KUBECONFIG)")
                )


def _binary(env: str, local: Path, name: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise KubeError(f"{name} not found: set {env}")
    return found


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    chart_default = ROOT / ".tools/cluster/chart"
    if not chart_default.exists():
        chart_default = ROOT / "charts/resnet-serving"
    c = Cluster(
        kubeconfig=Path(os.environ["E2E_KUBECONFIG"]),
        namespace=os.environ.get("E2E_NAMESPACE", "resnet"),
        release=os.environ.get("E2E_RELEASE", "resnet-serving"),
        chart=Path(os.environ.get("E2E_CHART", str(chart_default))),
        kubectl=_binary("E2E_KUBECTL", ROOT / ".tools/cluster/bin/kubectl", "kubectl"),
        helm=_binary("E2E_HELM", ROOT / ".tools/bin/helm", "helm"),
        node_exec=tuple(shlex.split(os.environ.get("E2E_NODE_EXEC", ""))),
    )
    # The cluster must answer: a suite that was asked to run fails here, it does not skip.
    c.kubectl_("get", "--raw", "/readyz", timeout=30)
    c.wait_rolled_out()
    return c


def _through_node_port(cluster: Cluster, port_name: str, override: str) -> str:
    """<node InternalIP>:<node port> of the Service port PORT_NAME (a NodePort Service, as
    values-dev.yaml makes it), unless the OVERRIDE variable names another way in."""
    port = cluster.service_port(port_name)
    if "nodePort" not in port:
        raise KubeError(
            f"the release's Service port {port_name!r} has no node port: set {override}"
        )
    return f"{cluster.node_address()}:{port['nodePort']}"


@pytest.fixture(scope="session")
def base_url(cluster: Cluster) -> str:
    if os.environ.get("E2E_BASE_URL"):
        return os.environ["E2E_BASE_URL"].rstrip("/")
    return f"http://{_through_node_port(cluster, 'http', 'E2E_BASE_URL')}"


@pytest.fixture(scope="session")
def grpc_target(cluster: Cluster) -> str:
    """host:port of the Open Inference Protocol's gRPC port, through the Service."""
    if os.environ.get("E2E_GRPC_TARGET"):
        return os.environ["E2E_GRPC_TARGET"]
    return _through_node_port(cluster, "grpc", "E2E_GRPC_TARGET")


@pytest.fixture(scope="session")
def photo() -> bytes:
    """A real photograph (matplotlib's sample data: Grace Hopper in uniform)."""
    from helpers.images import photo_bytes

    return photo_bytes("grace_hopper")


@pytest.fixture(scope="session")
def figures(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """Each test adds its figures under its own key; written out at the end of the session."""
    recorded: dict[str, Any] = {}
    yield recorded
    version = cluster.raw("/version")
    nodes = cluster.get("nodes", namespace="default")["items"]
    results: dict[str, Any] = {
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "cluster": {
            "kubernetes": version.get("gitVersion"),
            "nodes": [n["metadata"]["name"] for n in nodes],
            "namespace": cluster.namespace,
            "release": cluster.release,
        },
    }
    setup = os.environ.get("E2E_SETUP_JSON")
    if setup and Path(setup).is_file():
        results["setup"] = json.loads(Path(setup).read_text())
    results["tests"] = recorded
    out = Path(os.environ.get("E2E_RESULTS", str(ROOT / "bench/results/e2e.json")))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@pytest.fixture
def release_ready(cluster: Cluster) -> Cluster:
    """Each test starts from a rolled-out release with every replica ready and no pod of an
    earlier revision left: a test that ended with an upgrade or a rollback (API keys on, then
    off) must not have its old pods answer the next test's calls."""
    cluster.wait_rolled_out()
    wait_until("every replica ready, none terminating", cluster.settled, 300)
    return cluster
