"""Helpers of the monitoring tests: the chart's rules as promtool reads them, the metric names a
PromQL expression uses, the series names the app's real /metrics output declares, the
dashboards' queries, and the series that only a Kubernetes cluster has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from chart.chartkit import ROOT, Render, only
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"
DASHBOARDS_DIR = ROOT / "dashboards"
TROUBLESHOOTING = ROOT / "docs" / "TROUBLESHOOTING.md"
# The file name the promtool test files expect next to them (their rule_files).
RULES_FILE = "resnet-serving.rules.yaml"
# Prefixes of the series the chart's recording rules write (a tuple: `str.startswith` takes
# it): the SLIs, and the per-version A/B recordings (group resnet-serving.ab).
RECORDING_RULE_PREFIX = ("resnet_serving:", "namespace_job_model_version:")
# A/B testing: the version labels of the chart's defaults (`modelVersion`, `canary.modelVersion`)
# and the values that turn the canary on (it must change the model: another architecture).
# ResNetServingCanaryWorse exists only with them; the checks of every alert render with them.
STABLE_VERSION = "v1"
CANARY_VERSION = "v2"
CANARY_ON = ("canary.enabled=true", "canary.config.SERVING_MODEL_NAME=resnet18")
# Series Prometheus itself writes for every target.
PROMETHEUS_SERIES = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
)
# Series that exist only in a Kubernetes cluster, and what exports them. Alerts and panels on
# them are covered by promtool unit tests with synthetic series, and listed as cluster-only
# (by name) by the real Prometheus test.
CLUSTER_SERIES = {
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_pod_container_status_last_terminated_reason": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_min_replicas": "kube-state-metrics",
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet)",
    "container_memory_working_set_bytes": "cAdvisor (kubelet)",
}
# Series the app exports only where a Redis is configured (SERVING_CACHE_REDIS_URL): without one
# there is no series, so ResNetServingCacheRedisDown cannot fire (test_alert_rules.py checks the
# absence). Checks that read an app without a Redis (its registry, the in-process /metrics page)
# take them as known; the real Prometheus test runs the app with a real Redis and finds them on
# its /metrics page.
REDIS_ONLY_SERIES = frozenset({"prediction_cache_redis_up"})
# Series the app exports only where it shadows requests to another version (SERVING_SHADOW_URL;
# the stable's pods with canary.shadowPercent): checks that read an app without one take them as
# known; the real Prometheus test runs a stable that shadows to a canary and finds them.
SHADOW_ONLY_SERIES = frozenset(
    {"shadow_comparisons_total", "shadow_duration_seconds_bucket", "shadow_duration_seconds_count",
     "shadow_duration_seconds_sum", "shadow_comparisons_created", "shadow_duration_seconds_created"}
)  # fmt: skip

Rule = dict[str, Any]


# --- the chart's rules --------------------------------------------------------------------------


def rule_groups(
    render: Render,
    values: tuple[Path, ...] = (),
    set_values: tuple[str, ...] = (),
    *,
    release: str = "rel",
    namespace: str = "serving",
) -> list[dict[str, Any]]:
    """The groups of the PrometheusRule that `helm template` renders (not a copy)."""
    manifests = render(values, ["prometheusRule.enabled=true", *set_values], release=release,
                       namespace=namespace)  # fmt: skip
    groups: list[dict[str, Any]] = only(manifests, "PrometheusRule")["spec"]["groups"]
    return groups


def rules_of(groups: list[dict[str, Any]]) -> Iterator[Rule]:
    for group in groups:
        yield from group["rules"]


def write_rules_file(groups: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


# --- PromQL ------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_OFFSET = re.compile(r"\b(offset)\s+-?[0-9a-z]+", re.IGNORECASE)
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])\s*(\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (PromQL, or Grafana's label_values(...))."""
    match = _LABEL_VALUES.match(expr)
    if match:
        expr = match.group(1)
    # A selector written as {__name__="x"} names x.
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = _STRING.sub('""', expr)
    previous = None
    while previous != text:  # innermost braces first (none nest in PromQL, but be safe)
        previous = text
        text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    for ident, call in _IDENT.findall(text):
        if call or ident.lower() in _KEYWORDS:
            continue  # a function, an aggregation or a keyword
        names.add(ident)
    return names


# --- the app's metrics -------------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}


def declared_series(metrics_text: str) -> set[str]:
    """Every series name a /metrics page declares: samples present, and those that a family
    (a labelled counter with no child yet, say) will expose once it has one."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {sample.name for sample in family.samples}
        suffixes = _SUFFIXES.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def families(metrics_text: str) -> dict[str, str]:
    """Family name -> type of each metric family on a /metrics page (HELP/TYPE lines)."""
    return {f.name: f.type for f in text_string_to_metric_families(metrics_text)}


# --- dashboards --------------------------------------------------------------------------------


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expression) of every panel target."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target.get("refId", ""), target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            q = variable["query"]
            yield variable["name"], q if isinstance(q, str) else q["query"]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def markdown_headings(text: str, level: int) -> list[str]:
    prefix = "#" * level + " "
    return [line[len(prefix) :].strip() for line in text.splitlines() if line.startswith(prefix)]
