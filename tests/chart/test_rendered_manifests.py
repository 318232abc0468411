"""Rendered manifests: valid against Kubernetes and prometheus-operator schemas, consistent."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.chartkit import (
    MONITORING_ON,
    RELEASE,
    VALUES_DEV,
    VALUES_PROD,
    VALUES_PROD_GPU,
    Helm,
    Manifest,
    Render,
    only,
    server_service,
    template_args,
)

# The chart's kubeVersion floor and a current release (schemas laid out by scripts/install.sh).
KUBERNETES_VERSIONS = ("1.27.0", "1.34.0")
VALUE_SETS = {
    "defaults": (),
    "dev": (VALUES_DEV,),
    "prod": (VALUES_PROD,),
    "prod+gpu": VALUES_PROD_GPU,
}
# With the defaults, the monitoring objects are off: turn them on where they are checked.
EXTRA = {"defaults": MONITORING_ON, "dev": (), "prod": (), "prod+gpu": ()}
# The chart's Redis (the prediction cache's shared tier): off by default, on in the checks below
# that validate every object, so its Deployment, Service, Secret and NetworkPolicy go through
# them with each values file.
REDIS_ON = ("cache.redis.enabled=true",)
# Every optional resource on, to validate each template at least once.
ALL_ON = (
    *MONITORING_ON,
    *REDIS_ON,
    "ingress.enabled=true",
    "networkPolicy.enabled=true",
    "networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.team=gateway",
    "networkPolicy.egress[0].ports[0].port=53",
    "networkPolicy.egress[0].ports[0].protocol=UDP",
    "autoscaling.enabled=true",
    "autoscaling.targetMemoryUtilizationPercentage=80",
    "service.type=LoadBalancer",
    "service.nodePort=30123",
)


def kubeconform(binary: Path, schemas: Path, version: str, manifest_file: Path) -> str:
    proc = subprocess.run(
        [
            str(binary),
            "-strict",
            "-summary",
            "-output",
            "text",
            "-kubernetes-version",
            version,
            "-schema-location",
            str(schemas / "kubernetes")
            + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
            + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-schema-location",
            str(schemas / "crds")
            + "/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json",
            str(manifest_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", [*VALUE_SETS, "all-on"])
def test_manifests_validate_offline(
    helm: Helm,
    offline_chart: Path,
    kubeconform_bin: Path,
    schemas_dir: Path,
    tmp_path: Path,
    name: str,
    version: str,
) -> None:
    values, extra = (
        (VALUE_SETS[name], (*EXTRA[name], *REDIS_ON)) if name in VALUE_SETS else ((), ALL_ON)
    )
    out = tmp_path / f"{name}.yaml"
    rendered = helm(*template_args(offline_chart, values, extra), "--kube-version", version).stdout
    out.write_text(rendered)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    report = kubeconform(kubeconform_bin, schemas_dir, version, out)
    count = sum(1 for doc in yaml.safe_load_all(rendered) if doc)
    # Nothing skipped for want of a schema: the CRDs are validated too.
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in report, report
    assert {"ServiceMonitor", "PrometheusRule", "Deployment", "Service", "Secret"} <= kinds


def test_kubeconform_catches_an_invalid_manifest(
    render: Render, kubeconform_bin: Path, schemas_dir: Path, tmp_path: Path
) -> None:
    manifests = render([VALUES_PROD])
    only(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["intervall"] = "30s"
    only(manifests, "Deployment")["spec"]["replicas"] = "three"
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump_all(manifests))
    with pytest.raises(AssertionError) as failure:
        kubeconform(kubeconform_bin, schemas_dir, "1.34.0", out)
    assert "intervall" in str(failure.value)
    assert "replicas" in str(failure.value)


# --- labels and selectors agree ----------------------------------------------------------------
def _selector(manifest: Manifest) -> dict[str, str]:
    spec = manifest["spec"]
    selector: dict[str, str] = (
        spec["selector"] if manifest["kind"] == "Service" else spec["selector"]["matchLabels"]
    )
    return selector


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_deployment_service_servicemonitor_and_pdb_select_the_same_pods(
    render: Render, name: str
) -> None:
    manifests = render(VALUE_SETS[name], [*EXTRA[name], "podDisruptionBudget.enabled=true"])
    deployment = only(manifests, "Deployment")
    service = server_service(manifests)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = _selector(deployment)
    assert selector.items() <= pod_labels.items()
    assert _selector(service) == selector
    assert _selector(only(manifests, "PodDisruptionBudget")) == selector
    # The ServiceMonitor selects Services: ours must carry its selector.
    monitor = only(manifests, "ServiceMonitor")
    assert _selector(monitor).items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_servicemonitor_scrapes_the_services_named_port_which_targets_the_container(
    render: Render, name: str
) -> None:
    manifests = render(VALUE_SETS[name], EXTRA[name])
    service_port = server_service(manifests)["spec"]["ports"][0]
    endpoint = only(manifests, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["port"] == service_port["name"] == "http"
    assert endpoint["path"] == "/metrics"
    container = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert service_port["targetPort"] in {p["name"] for p in container["ports"]}
    # The release's Service port; behind the A/B router (values-prod), the container's own on
    # <fullname>-stable, which the router's config names.
    assert service_port["port"] in {8080, int(container["ports"][0]["containerPort"])}


def test_defaults_install_on_a_cluster_without_prometheus_operator(render: Render) -> None:
    groups = {m["apiVersion"].split("/")[0] for m in render()}
    assert "monitoring.coreos.com" not in groups


def test_the_helm_test_pod_is_not_behind_the_service(render: Render) -> None:
    manifests = render()
    pod = only(manifests, "Pod")
    selector = _selector(only(manifests, "Service"))
    assert not selector.items() <= pod["metadata"]["labels"].items()


# --- config checksum ---------------------------------------------------------------------------
def _checksum(manifests: list[Manifest]) -> str:
    annotations = only(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations["checksum/config"]
    return value


def test_a_settings_change_rolls_the_pods_and_other_changes_do_not(render: Render) -> None:
    base = _checksum(render())
    assert _checksum(render([], ["config.SERVING_TOP_K=3"])) != base
    assert _checksum(render([], ["config.SERVING_LOG_LEVEL=debug"])) != base
    assert _checksum(render([], ["replicaCount=5"])) == base
    assert _checksum(render([], ["resources.limits.cpu=3"])) == base


def test_dev_and_prod_render_the_same_kinds_of_our_own_resources(render: Render) -> None:
    def kinds(manifests: list[Manifest], *, cache: bool) -> set[str]:
        return {m["kind"] for m in manifests if (_component(m) == "cache") == cache}

    dev, prod = render([VALUES_DEV]), render([VALUES_PROD])
    assert kinds(prod, cache=False) - kinds(dev, cache=False) == {
        "HorizontalPodAutoscaler", "PodDisruptionBudget",
    }  # fmt: skip
    assert kinds(dev, cache=False) <= kinds(prod, cache=False)
    # values-dev deploys the cache's Redis beside the server; values-prod leaves the shared tier
    # to a Redis the platform runs (cache.redis.url), so it renders none.
    assert kinds(dev, cache=True) == {"Deployment", "Service", "Secret", "NetworkPolicy"}
    assert kinds(prod, cache=True) == set()


def _component(manifest: Manifest) -> str | None:
    component: str | None = (manifest["metadata"].get("labels") or {}).get(
        "app.kubernetes.io/component"
    )
    return component


# --- every pod: the restricted Pod Security Standard, resources ---------------------------------
def _pod_specs(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    """Kind/name -> pod spec of every workload and bare pod (the `helm test` pod)."""
    specs: dict[str, dict[str, Any]] = {}
    for m in manifests:
        if m["kind"] == "Pod":
            specs[f"Pod/{m['metadata']['name']}"] = m["spec"]
        elif m["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            specs[f"{m['kind']}/{m['metadata']['name']}"] = m["spec"]["template"]["spec"]
    return specs


def _restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What the "restricted" Pod Security Standard (and this chart's rules) would refuse."""
    found = []
    pod = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(key)
    found += [f"hostPath volume {v['name']}" for v in spec.get("volumes", []) if "hostPath" in v]
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            found.append(f"{where}: runAsNonRoot")
        user = sc.get("runAsUser", pod.get("runAsUser"))
        if not (isinstance(user, int) and user > 0):
            found.append(f"{where}: numeric non-zero runAsUser")
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            found.append(f"{where}: seccompProfile")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation")
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            found.append(f"{where}: capabilities drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities added")
        if sc.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: readOnlyRootFilesystem")
        resources = c.get("resources", {})
        for kind, name in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
            if name not in resources.get(kind, {}):
                found.append(f"{where}: resources.{kind}.{name}")
    return found


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_pod_meets_the_restricted_standard_and_has_resources(
    render: Render, name: str
) -> None:
    specs = _pod_specs(render(VALUE_SETS[name], [*EXTRA[name], *REDIS_ON]))
    assert f"Deployment/{RELEASE}-resnet-serving-redis" in specs
    assert {kind: _restricted_violations(spec) for kind, spec in specs.items()} == {
        kind: [] for kind in specs
    }


def test_the_restricted_check_can_fail(render: Render) -> None:
    specs = _pod_specs(render([], REDIS_ON))
    redis = specs[f"Deployment/{RELEASE}-resnet-serving-redis"]
    redis["securityContext"].pop("runAsNonRoot")
    container = redis["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    container["securityContext"].pop("runAsNonRoot")
    del container["resources"]["limits"]
    assert _restricted_violations(redis) == [
        "container redis: runAsNonRoot",
        "container redis: allowPrivilegeEscalation",
        "container redis: resources.limits.memory",
    ]


# --- the Redis pod is selected by its own objects only ----------------------------------------
def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_no_selector_of_the_server_selects_redis_and_redis_selects_only_itself(
    render: Render, name: str
) -> None:
    manifests = render(
        VALUE_SETS[name],
        [
            *EXTRA[name],
            *REDIS_ON,
            "podDisruptionBudget.enabled=true",
            "autoscaling.enabled=true",
            "networkPolicy.enabled=true",
        ],
    )
    server = only(manifests, "Deployment", f"{RELEASE}-resnet-serving")
    redis = only(manifests, "Deployment", f"{RELEASE}-resnet-serving-redis", cache=True)
    server_pod = server["spec"]["template"]["metadata"]["labels"]
    redis_pod = redis["spec"]["template"]["metadata"]["labels"]
    service = server_service(manifests)
    redis_service = only(manifests, "Service", f"{RELEASE}-resnet-serving-redis", cache=True)
    # Pod selectors of the server's objects: its Deployment, Service, PDB, NetworkPolicy.
    for selector in (
        _selector(server),
        _selector(service),
        _selector(only(manifests, "PodDisruptionBudget")),
        only(manifests, "NetworkPolicy", f"{RELEASE}-resnet-serving")["spec"]["podSelector"][
            "matchLabels"
        ],
    ):
        assert _selects(selector, server_pod)
        assert not _selects(selector, redis_pod)
    # The ServiceMonitor selects Services: the server's, never Redis'.
    monitor = _selector(only(manifests, "ServiceMonitor"))
    assert _selects(monitor, service["metadata"]["labels"])
    assert not _selects(monitor, redis_service["metadata"]["labels"])
    # The HPA scales the server's Deployment.
    target = only(manifests, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target["name"] == server["metadata"]["name"]
    # Redis' own Deployment, Service and NetworkPolicy select the Redis pod, not the server's.
    policy = only(manifests, "NetworkPolicy", f"{RELEASE}-resnet-serving-redis", cache=True)["spec"]
    for selector in (
        _selector(redis),
        _selector(redis_service),
        policy["podSelector"]["matchLabels"],
    ):
        assert _selects(selector, redis_pod)
        assert not _selects(selector, server_pod)
    # and admit the server pods only.
    (peer,) = policy["ingress"][0]["from"]
    assert _selects(peer["podSelector"]["matchLabels"], server_pod)
    assert not _selects(peer["podSelector"]["matchLabels"], redis_pod)


# --- the Redis password: in its Secret, nowhere else --------------------------------------------
def test_the_redis_password_is_in_its_secret_only(render: Render) -> None:
    password = "pw-only-in-the-secret-4711"  # noqa: S105 (a test value)
    manifests = render([], [*REDIS_ON, f"cache.redis.password={password}"])
    secret = only(manifests, "Secret", f"{RELEASE}-resnet-serving-redis", cache=True)
    encoded = base64.b64encode(password.encode()).decode()
    assert secret["data"]["redis-password"] == encoded
    rest = yaml.safe_dump_all([m for m in manifests if m is not secret])
    assert password not in rest
    assert encoded not in rest
    # The two pods that use it read it from the Secret.
    for name, cache in ((f"{RELEASE}-resnet-serving", False),
                        (f"{RELEASE}-resnet-serving-redis", True)):  # fmt: skip
        deployment = only(manifests, "Deployment", name, cache=cache)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        refs = [
            e["valueFrom"]["secretKeyRef"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        assert {"name": f"{RELEASE}-resnet-serving-redis", "key": "redis-password"} in refs
