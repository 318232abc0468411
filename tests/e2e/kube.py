"""The cluster as the e2e suite sees it: kubectl and helm against one kubeconfig, and the
handful of reads the tests need (pods, deployments, endpoints, Prometheus through the apiserver
proxy). Works against any cluster: the local one of scripts/cluster.sh or kind in the workflow.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

T = TypeVar("T")

# Every call is bounded: a hung kubectl or helm fails the test with its command line.
DEFAULT_TIMEOUT_S = 120.0


class KubeError(AssertionError):
    pass


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    namespace: str
    release: str
    chart: Path
    kubectl: str = "kubectl"
    helm: str = "helm"
    # A command prefix that runs a shell command on the node (kill -9 from outside the pod):
    # empty when the node is this machine, `docker exec <node>` on kind.
    node_exec: Sequence[str] = field(default_factory=tuple)

    # --- raw commands ----------------------------------------------------------------------
    def run(
        self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KubeError(f"timed out after {timeout:.0f}s: {shlex.join(argv)}") from exc
        if check and result.returncode != 0:
            raise KubeError(
                f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def kubectl_(self, *args: str, timeout: float = DEFAULT_TIMEOUT_S, check: bool = True) -> str:
        argv = [self.kubectl, "--kubeconfig", str(self.kubeconfig), *args]
        return self.run(argv, timeout=timeout, check=check).stdout

    def helm_(self, *args: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        argv = [self.helm, "--kubeconfig", str(self.kubeconfig), "-n", self.namespace, *args]
        return self.run(argv, timeout=timeout).stdout

    def get(self, *args: str, namespace: str | None = None) -> Any:
        ns = ["-n", namespace or self.namespace]
        return json.loads(self.kubectl_("get", *args, *ns, "-o", "json"))

    def raw(self, path: str) -> Any:
        return json.loads(self.kubectl_("get", "--raw", path))

    # --- the release -----------------------------------------------------------------------
    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=server"

    def deployment(self) -> dict[str, Any]:
        # The server's: the release also deploys a Redis (cache.redis) under the same instance.
        items = self.get("deployment", "-l", self.selector)["items"]
        if len(items) != 1:
            raise KubeError(f"expected one Deployment of {self.release}, found {len(items)}")
        deployment: dict[str, Any] = items[0]
        return deployment

    def pod_metrics(self, pod: dict[str, Any]) -> str:
        """A serving pod's /metrics page, through the API server's proxy to the pod (the port
        that serves it: `metrics` when SERVING_METRICS_PORT moves it, else `http`)."""
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        port = ports.get("metrics", ports["http"])
        name = pod["metadata"]["name"]
        path = f"/api/v1/namespaces/{self.namespace}/pods/{name}:{port}/proxy/metrics"
        return self.kubectl_("get", "--raw", path)

    def pods(self) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.get("pods", "-l", self.selector)["items"]
        return pods

    def ready_pods(self) -> list[dict[str, Any]]:
        return [
            p for p in self.pods() if is_ready(p) and not p["metadata"].get("deletionTimestamp")
        ]

    def settled(self) -> bool:
        """As many pods as the Deployment asks for now (an HPA may still be changing it), every
        one ready and none terminating: no call can reach a pod of an earlier revision (a
        terminating pod keeps answering through its preStop while the Service's rules catch
        up)."""
        replicas = int(self.deployment()["spec"]["replicas"])
        pods = self.pods()
        return len(pods) == replicas and all(
            is_ready(p) and not p["metadata"].get("deletionTimestamp") for p in pods
        )

    def config(self) -> dict[str, str]:
        """The release's settings: the data of its ConfigMap (named like its Deployment)."""
        name = self.deployment()["metadata"]["name"]
        data: dict[str, str] = self.get("configmap", name)["data"]
        return data

    def service_port(self, name: str) -> dict[str, Any]:
        """The port called NAME of the release's own Service (`http`, `grpc`, ...): selected by
        the server component label, since the subchart's Services share the instance label."""
        services = self.get("service", "-l", self.selector)
        found: list[dict[str, Any]] = [
            port
            for service in services["items"]
            for port in service["spec"]["ports"]
            if port["name"] == name
        ]
        if len(found) != 1:
            raise KubeError(f"expected one Service port {name!r} of {self.release}: {found}")
        return found[0]

    def node_address(self) -> str:
        """The InternalIP of the first node: where a NodePort answers from this machine."""
        [node] = self.get("nodes", namespace="default")["items"][:1]
        address: str = next(
            a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"
        )
        return address

    def wait_rolled_out(self, timeout: float = 300.0) -> None:
        name = self.deployment()["metadata"]["name"]
        self.kubectl_(
            "rollout",
            "status",
            f"deployment/{name}",
            "-n",
            self.namespace,
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )

    def helm_revision(self) -> int:
        history = json.loads(self.helm_("history", self.release, "-o", "json"))
        return int(history[-1]["revision"])

    def upgrade(self, *set_args: str, timeout: float = 600.0) -> None:
        """`helm upgrade --reuse-values` with extra --set flags, waiting until Ready."""
        sets: list[str] = []
        for item in set_args:
            sets += ["--set", item]
        self.helm_(
            "upgrade",
            self.release,
            str(self.chart),
            "--reuse-values",
            *sets,
            "--wait",
            "--timeout",
            f"{int(timeout)}s",
            timeout=timeout + 30,
        )

    def node_shell(self, command: str, timeout: float = 60.0) -> str:
        return self.run([*self.node_exec, "sh", "-c", command], timeout=timeout).stdout

    # --- Prometheus, through the apiserver's service proxy (no route to pod IPs needed) ------
    def prometheus_service(self) -> tuple[str, str]:
        """(namespace, service) of the operator-managed Prometheus: the operator always creates
        the governing Service `prometheus-operated` (port `web`) next to its Prometheus."""
        items = json.loads(
            self.kubectl_(
                "get",
                "service",
                "-A",
                "--field-selector",
                "metadata.name=prometheus-operated",
                "-o",
                "json",
            )
        )["items"]
        if not items:
            raise KubeError("no prometheus-operated Service: is a prometheus-operator running?")
        return items[0]["metadata"]["namespace"], "prometheus-operated"

    def prometheus(self, api_path: str, **params: str) -> Any:
        namespace, service = self.prometheus_service()
        query = f"?{urlencode(params)}" if params else ""
        body = self.raw(
            f"/api/v1/namespaces/{namespace}/services/{service}:web/proxy{api_path}{query}"
        )
        if body.get("status") != "success":
            raise KubeError(f"Prometheus {api_path}: {body}")
        return body["data"]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def restart_count(pod: dict[str, Any]) -> int:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float, interval: float = 1.0
) -> T:
    """Poll PROBE until it returns something other than None/False; fail naming WHAT."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except KubeError as exc:  # a transient apiserver error is not the answer yet
            last_error = exc
            value = None
        if value is not None and value is not False:
            return value
        time.sleep(interval)
    raise KubeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")
