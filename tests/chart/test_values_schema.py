"""values.schema.json: mistakes that would hurt in a cluster are refused before anything renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from chart.chartkit import (
    VALUES_DEV,
    VALUES_PROD,
    VALUES_PROD_GPU,
    Helm,
    Render,
    only,
    template_args,
)

BAD_VALUES: dict[str, tuple[list[str], str]] = {
    # image
    "empty image repository": (["image.repository="], "/image/repository"),
    "image repository with a tag": (["image.repository=ghcr.io/x/y:1.0"], "/image/repository"),
    "registry port is fine, a tag is not": (
        ["image.repository=reg:5000/x/y:1"],
        "/image/repository",
    ),
    "image digest that is no sha256": (["image.digest=latest"], "/image/digest"),
    "unknown pull policy": (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    "unknown image variant": (["image.variant=cuda"], "/image/variant"),
    # replicas
    "negative replicas": (["replicaCount=-1"], "/replicaCount"),
    "replicas as text": (["replicaCount=three"], "/replicaCount"),
    "typo at the top level": (["replicas=3"], "additional properties 'replicas' not allowed"),
    # resources
    "memory with a space": (["resources.limits.memory=1 GB"], "/resources/limits/memory"),
    "cpu with a unit typo": (["resources.requests.cpu=500mc"], "/resources/requests/cpu"),
    "negative cpu": (["resources.requests.cpu=-1"], "/resources/requests/cpu"),
    "resources typo": (["resources.limit.cpu=1"], "additional properties 'limit' not allowed"),
    # probes
    "probe path without slash": (["livenessProbe.httpGet.path=health"], "/livenessProbe"),
    "probe period 0": (["readinessProbe.periodSeconds=0"], "/readinessProbe/periodSeconds"),
    "probe typo": (["startupProbe.failureTreshold=3"], "'failureTreshold' not allowed"),
    "probe without a handler": (["startupProbe.httpGet=null"], "/startupProbe"),
    # ports and service
    "service type outside the enum": (["service.type=ExternalName"], "/service/type"),
    "service port above 65535": (["service.port=70000"], "/service/port"),
    "node port outside the range": (
        ["service.type=NodePort", "service.nodePort=8080"],
        "/service/nodePort",
    ),
    "SERVING_PORT not a port": (["config.SERVING_PORT=http"], "/config/SERVING_PORT"),
    # settings and scaling
    "setting without prefix": (["config.MODEL_NAME=resnet18"], "MODEL_NAME"),
    "setting as a map": (["config.SERVING_TOP_K.value=3"], "/config/SERVING_TOP_K"),
    "hpa minReplicas 0": (["autoscaling.minReplicas=0"], "/autoscaling/minReplicas"),
    "pdb as words": (
        ["podDisruptionBudget.maxUnavailable=one"],
        "/podDisruptionBudget/maxUnavailable",
    ),
    "strategy type typo": (["strategy.type=Rolling"], "/strategy/type"),
    "scrape interval without unit": (["serviceMonitor.interval=30"], "/serviceMonitor/interval"),
    "subchart switch as text": (
        ["kube-prometheus-stack.enabled=yes"],
        "/kube-prometheus-stack/enabled",
    ),
    # tracing (the standard OTEL_* variables)
    "sampler ratio above 1": (["tracing.samplerRatio=1.5"], "/tracing/samplerRatio"),
    "negative sampler ratio": (["tracing.samplerRatio=-0.1"], "/tracing/samplerRatio"),
    "sampler ratio as a percentage": (["tracing.samplerRatio=5%"], "/tracing/samplerRatio"),
    "OTLP protocol other than grpc or http/protobuf": (
        ["tracing.protocol=http/json"],
        "/tracing/protocol",
    ),
    "sampler the SDK does not name": (["tracing.sampler=ratio"], "/tracing/sampler"),
    "OTLP endpoint without a scheme": (
        ["tracing.endpoint=jaeger-collector:4318"],
        "/tracing/endpoint",
    ),
    "resource attribute value with a space": (
        ["tracing.resourceAttributes.team=ml serving"],
        "/tracing/resourceAttributes/team",
    ),
    "tracing typo": (
        ["tracing.sampleRatio=0.1"],
        "additional properties 'sampleRatio' not allowed",
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_schema_refuses_bad_values(helm: Helm, offline_chart: Path, case: str) -> None:
    set_values, message = BAD_VALUES[case]
    proc = helm(*template_args(offline_chart, [], set_values), check=False)
    assert proc.returncode != 0, f"accepted: {set_values}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_refuses_a_numeric_tag_from_a_values_file(
    helm: Helm, offline_chart: Path, tmp_path: Path
) -> None:
    # In a values file, `tag: 1.10` is the float 1.1: refuse it instead of pulling :1.1.
    values = tmp_path / "v.yaml"
    values.write_text("image:\n  tag: 1.10\n")
    proc = helm(*template_args(offline_chart, [values]), check=False)
    assert proc.returncode != 0
    assert "/image/tag" in proc.stderr


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("1", "2Gi"), ("500m", "1.5Gi"), ("2", "2147483648")],
)
def test_resources_take_numbers_and_strings(
    helm: Helm, offline_chart: Path, tmp_path: Path, cpu: str, memory: str
) -> None:
    # Unquoted in the file: YAML numbers where they parse as numbers, strings otherwise.
    values = tmp_path / "v.yaml"
    values.write_text(
        f"resources:\n  requests:\n    cpu: {cpu}\n    memory: {memory}\n"
        f"  limits:\n    cpu: {cpu}\n    memory: {memory}\n"
    )
    proc = helm(*template_args(offline_chart, [values]), check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("ratio", ["0", "0.05", "1", "1.0", ".5"])
def test_tracing_ratio_takes_numbers_and_decimal_strings(
    helm: Helm, offline_chart: Path, tmp_path: Path, ratio: str
) -> None:
    # A number in a values file; a string from --set (which types only integers).
    values = tmp_path / "v.yaml"
    values.write_text(f"tracing:\n  samplerRatio: {ratio}\n")
    for args in (
        template_args(offline_chart, [values]),
        template_args(offline_chart, [], [f"tracing.samplerRatio={ratio}"]),
    ):
        proc = helm(*args, check=False)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "repository",
    ["ghcr.io/resnet-serving/resnet-serving", "localhost:5000/resnet-serving", "resnet-serving"],
)
def test_schema_takes_registry_forms(helm: Helm, offline_chart: Path, repository: str) -> None:
    proc = helm(*template_args(offline_chart, [], [f"image.repository={repository}"]), check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "values",
    [(), (VALUES_DEV,), (VALUES_PROD,), VALUES_PROD_GPU],
    ids=["defaults", "dev", "prod", "prod+gpu"],
)
def test_shipped_values_pass_the_schema(render: Render, values: tuple[Path, ...]) -> None:
    assert only(render(values), "Deployment")
