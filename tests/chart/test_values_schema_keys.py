"""values.yaml and values.schema.json name the same keys, in both directions, all the way down.

The schema refuses unknown keys (additionalProperties: false), so a key that values.yaml has and
the schema lacks breaks every install; a key the schema lists and values.yaml lacks is a setting
nobody can find in the documented defaults (the chart README is generated from values.yaml).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from chart.chartkit import CHART

SCHEMA_FILE = CHART / "values.schema.json"
VALUES_FILE = CHART / "values.yaml"

# Maps whose keys the schema deliberately does not list: values.yaml's keys under them are not
# looked up in the schema. Each must be open in the schema (checked below).
FREE_FORM: dict[str, str] = {
    "config": (
        "the app's SERVING_* settings: the schema constrains their names (propertyNames) and value "
        "types (additionalProperties); test_configmap_settings.py matches them 1:1 against "
        "app.settings.config.Settings, one list of names instead of a second copy here"
    ),
    "podSecurityContext": (
        "a Kubernetes PodSecurityContext written verbatim into the pod; kubeconform checks the "
        "rendered Deployment against the Kubernetes schema (test_rendered_manifests.py)"
    ),
    "securityContext": (
        "a Kubernetes SecurityContext written verbatim into the container; checked by "
        "kubeconform like podSecurityContext"
    ),
    "cache.redis.podSecurityContext": (
        "the Redis pod's PodSecurityContext, written verbatim like podSecurityContext; checked by "
        "kubeconform on the manifests rendered with cache.redis.enabled"
    ),
    "cache.redis.securityContext": (
        "the Redis container's SecurityContext, written verbatim like securityContext; checked "
        "by kubeconform like it"
    ),
    "router.podSecurityContext": (
        "the router pod's PodSecurityContext, written verbatim like podSecurityContext; checked "
        "by kubeconform on the manifests rendered with the router on (values-prod.yaml)"
    ),
    "router.securityContext": (
        "the router container's SecurityContext, written verbatim like securityContext; checked "
        "by kubeconform like it"
    ),
    "canary.resources": (
        "the canary container's resources, written verbatim (empty: the stable's); checked by "
        "kubeconform on the manifests rendered with the canary on"
    ),
    "router.strategy": (
        "a Kubernetes DeploymentStrategy written verbatim into the router's Deployment; checked "
        "by kubeconform"
    ),
    "autoscaling.behavior": (
        "a Kubernetes HorizontalPodAutoscalerBehavior written verbatim into the HPA; checked by "
        "kubeconform"
    ),
}

# Keys the schema lists that values.yaml deliberately leaves out, by the schema object that
# lists them (a JSON pointer: the same object serves every place that $refs it).
OPTIONAL: dict[str, tuple[frozenset[str], str]] = {
    "#": (
        frozenset({"global"}),
        "Helm's reserved key, shared with subcharts (kube-prometheus-stack reads "
        "global.imageRegistry and others); Helm validates it against this schema, so the schema "
        "must admit it, and the chart itself sets none",
    ),
    "#/properties/canary/properties/image": (
        frozenset({"repository", "tag", "digest", "pullPolicy", "variant"}),
        "the canary's image overrides, each optional: the stable's `image` value applies where "
        "one is not set",
    ),
    "#/definitions/probe": (
        frozenset(
            {"tcpSocket", "exec", "grpc", "initialDelaySeconds", "terminationGracePeriodSeconds"}
        ),
        "a Kubernetes Probe: the chart's probes use httpGet, and the other handlers are "
        "alternatives to it (the schema's oneOf admits exactly one); the timing fields left out "
        "keep Kubernetes' defaults, and setting them would change the rendered probes",
    ),
    "#/definitions/probe/properties/httpGet": (
        frozenset({"scheme", "host", "httpHeaders"}),
        "optional parts of a Kubernetes HTTPGetAction whose defaults (HTTP, the pod's IP, no "
        "headers) are what the probes need",
    ),
}


@dataclass
class Comparison:
    """What one walk of values.yaml against the schema found, and which exceptions it used."""

    schema: dict[str, Any]
    free_form: dict[str, str]
    optional: dict[str, tuple[frozenset[str], str]]
    values_only: list[str] = field(default_factory=list)
    schema_only: list[str] = field(default_factory=list)
    used_free_form: set[str] = field(default_factory=set)
    used_optional: set[tuple[str, str]] = field(default_factory=set)

    def resolve(self, node: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
        while "$ref" in node:
            pointer = node["$ref"]
            assert pointer.startswith("#/"), f"only local $refs are followed: {pointer}"
            node = self.schema
            for part in pointer[2:].split("/"):
                node = node[part]
        return node, pointer

    def walk(self, value: Any, node: dict[str, Any], pointer: str = "#", path: str = "") -> None:
        node, pointer = self.resolve(node, pointer)
        if isinstance(value, dict):
            if path in self.free_form:
                self.used_free_form.add(path)
                return
            properties: dict[str, Any] = node.get("properties", {})
            for key, child in value.items():
                where = f"{path}.{key}" if path else key
                if key not in properties:
                    self.values_only.append(where)
                    continue
                self.walk(child, properties[key], f"{pointer}/properties/{key}", where)
            allowed_absent = self.optional.get(pointer, (frozenset(), ""))[0]
            for key in properties:
                if key in value:
                    continue
                if key in allowed_absent:
                    self.used_optional.add((pointer, key))
                else:
                    self.schema_only.append(f"{path}.{key}" if path else key)
        elif isinstance(value, list) and "items" in node:
            # Item keys can only be compared where values.yaml has items (ingress.hosts, the
            # burn-rate windows); an empty list has nothing to compare.
            for index, item in enumerate(value):
                self.walk(item, node["items"], f"{pointer}/items", f"{path}[{index}]")


def _compare(
    values: dict[str, Any],
    schema: dict[str, Any],
    free_form: dict[str, str] = FREE_FORM,
    optional: dict[str, tuple[frozenset[str], str]] = OPTIONAL,
) -> Comparison:
    comparison = Comparison(schema, free_form, optional)
    comparison.walk(values, schema)
    return comparison


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALUES_FILE.read_text())
    return loaded


def test_every_key_of_values_yaml_is_in_the_schema(
    values: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert _compare(values, schema).values_only == []


def test_every_key_of_the_schema_is_in_values_yaml(
    values: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert _compare(values, schema).schema_only == []


def test_every_exception_is_used(values: dict[str, Any], schema: dict[str, Any]) -> None:
    # A stale exception would hide the next real mismatch at that place.
    comparison = _compare(values, schema)
    assert set(FREE_FORM) - comparison.used_free_form == set()
    listed = {(pointer, key) for pointer, (keys, _) in OPTIONAL.items() for key in keys}
    assert listed - comparison.used_optional == set()


@pytest.mark.parametrize("path", list(FREE_FORM))
def test_free_form_maps_are_open_in_the_schema(schema: dict[str, Any], path: str) -> None:
    comparison = Comparison(schema, {}, {})
    node, pointer = schema, "#"
    for key in path.split("."):
        node, pointer = comparison.resolve(node["properties"][key], f"{pointer}/properties/{key}")
    assert node.get("type") == "object"
    # Open: unknown keys pass, either to a value schema or unchecked.
    assert node.get("additionalProperties", True) is not False


def test_the_comparison_finds_a_key_on_either_side(
    values: dict[str, Any], schema: dict[str, Any]
) -> None:
    # The checks above can fail: a key added on one side only is reported, at any depth, in
    # a list item, and below a $ref.
    grown_values = json.loads(json.dumps(values))
    grown_values["service"]["portName"] = "http"
    grown_values["ingress"]["hosts"][0]["paths"][0]["backend"] = "x"
    grown_values["livenessProbe"]["httpGet"]["pathh"] = "/health"
    grown_values["config"]["SERVING_NEW_SETTING"] = "1"  # free-form: not reported
    assert sorted(_compare(grown_values, schema).values_only) == [
        "ingress.hosts[0].paths[0].backend",
        "livenessProbe.httpGet.pathh",
        "service.portName",
    ]

    grown_schema = json.loads(json.dumps(schema))
    grown_schema["properties"]["dashboards"]["properties"]["folder"] = {"type": "string"}
    grown_schema["definitions"]["probe"]["properties"]["httpGet"]["properties"]["query"] = {}
    assert sorted(_compare(values, grown_schema).schema_only) == [
        "dashboards.folder",
        "livenessProbe.httpGet.query",
        "readinessProbe.httpGet.query",
        "startupProbe.httpGet.query",
    ]
