"""The Grafana dashboards of dashboards/, built with the Grafana Foundation SDK (the source).

dashboards/*.json is generated from this file and committed: the Helm chart ships those files
(charts/resnet-serving/dashboards is a symlink to dashboards/) and the compose stack's Grafana
mounts them. tests/monitoring/test_dashboards.py fails when a committed file differs from what
this file generates, and evaluates every query against a real Prometheus scraping the app.

    python scripts/dashboards.py           # (re)write dashboards/*.json
    python scripts/dashboards.py --check   # exit 1 if one is stale

Two dashboards: the overview, and "A/B" (a stable and a canary model version side by side, by
the `model_version` label the app puts on every sample; its shadow panels read the series of the
pods that shadow, the stable's: SHADOW_PANELS). Each links to the other (tag `resnet-serving`).

Queries on the app's series are scoped by the `job`, `namespace` and `pod` variables (the A/B
dashboard's by `job` and `namespace`: a version is all its pods). Panels on
cluster series (cAdvisor, kube-state-metrics) restrict them to this job's pods by joining with
`up{job=~"$job"}`; their titles are listed in CLUSTER_ONLY_PANELS (no such series outside a
cluster). The panels on the prediction cache's Redis tier have data only where a Redis is
configured (SERVING_CACHE_REDIS_URL); the real Prometheus test runs one. The latency panels
(histogram quantiles of `*_seconds`) show exemplars, the trace IDs of traced requests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "dashboards"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query on the app's own series.
APP = 'job=~"$job", namespace=~"$namespace", pod=~"$pod"'
# Requests that count for the API's error ratio (the chart's prometheusRule.alerts.excludedRoutes).
API = APP + ', route!~"/health|/ready|/metrics"'
RATE = "[$__rate_interval]"
# The targets of this job: joined on (namespace, pod) to pick its pods' cluster series.
UP = 'up{job=~"$job", namespace=~"$namespace", pod=~"$pod"}'

# Panels whose queries read series that only a Kubernetes cluster has (kube-state-metrics,
# cAdvisor via the kubelet); tests skip them by these titles outside a cluster.
CLUSTER_ONLY_PANELS = (
    "Replicas (HPA current, desired, max)",
    "CPU per pod (container, cAdvisor)",
    "Memory per pod (container working set, cAdvisor)",
    "Container restarts (1h)",
)

# A/B dashboard: every pod of the selected jobs, both versions (they share job and namespace).
AB = 'job=~"$job", namespace=~"$namespace"'
AB_API = AB + ', route!~"/health|/ready|/metrics"'
# The routes of the latency comparison: the chart's prometheusRule.alerts.latency.routes.
AB_LATENCY = AB + ', route="/predict"'
# Panels of the A/B dashboard on the shadow comparison's series: exported only by the pods that
# shadow (the stable's, with canary.shadowPercent), so one series per shadowing version.
SHADOW_PANELS = (
    "Shadow disagreement ratio (top-1 class)",
    "Shadow comparisons / s by result",
    "Shadow call latency (p50, p95)",
)
# Both dashboards carry the tag; each lists the others (time range and variables kept).
TAG = "resnet-serving"

PanelBuilder = timeseries.Panel | stat.Panel | bargauge.Panel | table.Panel


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> Any:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    return q


def quantiles(
    metric: str,
    by: str,
    qs: tuple[float, ...],
    legend: str,
    extra: str = "",
    *,
    scope: str = APP,
) -> list[Any]:
    """histogram_quantile targets, one per quantile (legend gets `p50`, `p95`, ...).

    On a latency histogram (`*_seconds`) the first target also asks for exemplars: samples
    that carry the trace ID of a traced request (values `tracing`; Prometheus must keep them:
    `--enable-feature=exemplar-storage`), drawn as points a click away from the trace. One
    target is enough: Prometheus returns the exemplars of the series a query selects, and every
    quantile selects the same buckets, so more would draw each point again."""
    selector = f"{metric}_bucket{{{scope}{extra}}}"
    group = f"le, {by}" if by else "le"
    targets = [
        query(
            f"histogram_quantile({q}, sum by ({group}) (rate({selector}{RATE})))",
            f"p{round(q * 100)}{(' ' + legend) if legend else ''}",
            chr(ord("A") + i),
        )
        for i, q in enumerate(qs)
    ]
    if metric.endswith("_seconds"):
        targets[0] = targets[0].exemplar(True)
    return targets


class Layout:
    """Assigns ids and grid positions: rows of panels, 24 columns wide."""

    def __init__(self, board: dashboard.Dashboard) -> None:
        self.board = board
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _id(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value

    def row(self, title: str) -> None:
        self._newline()
        pos = model.GridPos(h=1, w=24, x=0, y=self.y)
        self.board.with_row(dashboard.Row(title).id(self._id()).grid_pos(pos))
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def add(self, panel: PanelBuilder, *, w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel.id(self._id()).grid_pos(model.GridPos(h=h, w=w, x=self.x, y=self.y))
        panel.datasource(DATASOURCE)
        self.board.with_panel(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def query_variable(name: str, label: str, definition: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(definition)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .multi(True)
        .all_value(".*")
    )


def timeseries_panel(title: str, description: str, unit: str, *targets: Any) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).unit(unit)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def absolute_thresholds(*steps: tuple[float, str]) -> dashboard.ThresholdsConfig:
    """Green below the first step, then each step's colour from its value up."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                model.Threshold(value=None, color="green"),
                *(model.Threshold(value=value, color=color) for value, color in steps),
            ]
        )
    )


def memory_budget_panel(kind: str, held_by: str, setting: str, waits: str) -> timeseries.Panel:
    """One of the two memory budgets (app/memory/budget.py): reserved now and the budget, per
    pod, from `<kind>_memory_in_flight_bytes` and `<kind>_memory_budget_bytes`."""
    return timeseries_panel(
        f"{kind.capitalize()} memory in flight and budget",
        f"Memory reserved by {held_by}, against the budget ({setting}, or derived from the "
        f"memory limit). {waits}, then is refused (Rejected / s, reason {kind}_memory).",
        "bytes",
        query(f"sum by (pod) ({kind}_memory_in_flight_bytes{{{APP}}})", "{{pod}} in flight"),
        query(f"max by (pod) ({kind}_memory_budget_bytes{{{APP}}})", "{{pod}} budget", "B"),
    )


def stat_panel(title: str, description: str, unit: str, expr: str, legend: str = "") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .with_target(query(expr, legend, instant=True))
    )


def other_dashboards() -> dashboard.DashboardLink:
    """A link to every other dashboard tagged TAG, keeping the time range and variables."""
    return (
        dashboard.DashboardLink("resnet-serving")
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(False)
        .include_vars(True)
        .keep_time(True)
    )


def overview() -> dict[str, Any]:
    board = (
        dashboard.Dashboard("resnet-serving / Overview")
        .uid("resnet-serving-overview")
        .description(
            "Traffic, errors, latency, model, batching and pods of resnet-serving "
            "(the metrics of app/telemetry/metrics.py; generated by scripts/dashboards.py)."
        )
        .tags([TAG])
        .link(other_dashboards())
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            query_variable("namespace", "Namespace", "label_values(model_info, namespace)")
        )
        .with_variable(
            query_variable("job", "Job", 'label_values(model_info{namespace=~"$namespace"}, job)')
        )
        .with_variable(
            query_variable(
                "pod",
                "Pod",
                'label_values(model_info{namespace=~"$namespace", job=~"$job"}, pod)',
            )
        )
    )
    layout = Layout(board)
    add: Callable[..., None] = layout.add

    layout.row("Overview")
    add(
        stat_panel(
            "Ready pods",
            "Pods whose model is loaded and warmed and that are not draining (model_ready).",
            "short",
            f"sum(model_ready{{{APP}}})",
        ),
        w=4,
        h=4,
    )
    add(
        stat_panel(
            "Requests / s",
            "HTTP requests answered per second, every route.",
            "reqps",
            f"sum(rate(request_count_total{{{APP}}}{RATE}))",
        ),
        w=5,
        h=4,
    )
    add(
        stat_panel(
            "5xx ratio (API)",
            "Share of API requests (probes and scrapes left out) answered 5xx: the "
            "availability SLI of the alerts.",
            "percentunit",
            f'(sum(rate(request_count_total{{{API}, status=~"5.."}}{RATE})) or vector(0))'
            f" / sum(rate(request_count_total{{{API}}}{RATE}))",
        ).thresholds(absolute_thresholds((0.005, "orange"), (0.05, "red"))),
        w=5,
        h=4,
    )
    add(
        stat_panel(
            "p95 latency /predict",
            "95th percentile of POST /predict, request received to response sent (target: 100 ms).",
            "s",
            "histogram_quantile(0.95, sum by (le) (rate(request_duration_seconds_bucket"
            f'{{{APP}, route="/predict"}}{RATE})))',
        ).thresholds(absolute_thresholds((0.1, "red"))),
        w=5,
        h=4,
    )
    add(
        stat_panel(
            "Predictions / s",
            "Images classified per second.",
            "short",
            f"sum(rate(prediction_count_total{{{APP}}}{RATE}))",
        ),
        w=5,
        h=4,
    )

    layout.row("HTTP")
    add(
        timeseries_panel(
            "Requests / s by route and status",
            "Request rate per route template and status code.",
            "reqps",
            query(
                f"sum by (route, status) (rate(request_count_total{{{APP}}}{RATE}))",
                "{{route}} {{status}}",
            ),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "Error ratio (5xx) by route",
            "Share of each route's requests answered 5xx.",
            "percentunit",
            query(
                f'sum by (route) (rate(request_count_total{{{APP}, status=~"5.."}}{RATE}))'
                f" / sum by (route) (rate(request_count_total{{{APP}}}{RATE}))",
                "{{route}}",
            ),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "Latency by route (p50, p95, p99)",
            "Request duration quantiles per route template, from request_duration_seconds.",
            "s",
            *quantiles("request_duration_seconds", "route", (0.5, 0.95, 0.99), "{{route}}"),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "Errors / s by code",
            "Error responses per second by the stable error code of docs/API.md.",
            "reqps",
            query(f"sum by (code) (rate(request_errors_total{{{APP}}}{RATE}))", "{{code}}"),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "Requests in flight",
            "HTTP requests being handled right now, per pod.",
            "short",
            query(f"sum by (pod) (requests_in_flight{{{APP}}})", "{{pod}}"),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "SLO: 5xx and slow-request ratios",
            "The alerts' SLIs as the chart's recording rules compute them: the share of API "
            "requests answered 5xx and of /predict requests slower than the latency target.",
            "percentunit",
            query(
                'resnet_serving:availability_errors:ratio_rate5m{job=~"$job", '
                'namespace=~"$namespace"}',
                "5xx ratio 5m {{job}}",
            ),
            query(
                'resnet_serving:latency_slow:ratio_rate5m{job=~"$job", namespace=~"$namespace"}',
                "slow ratio 5m {{job}}",
                "B",
            ),
        ),
        w=12,
        h=8,
    )

    layout.row("Model")
    add(
        timeseries_panel(
            "Predictions / s by model",
            "Images classified per second.",
            "short",
            query(f"sum by (model) (rate(prediction_count_total{{{APP}}}{RATE}))", "{{model}}"),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Inference time per batch (p50, p95, p99)",
            "Model forward pass per batch, softmax included (inference_duration_seconds).",
            "s",
            *quantiles("inference_duration_seconds", "", (0.5, 0.95, 0.99), ""),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Image decode + preprocess (p50, p95)",
            "Decode and preprocessing time per image (image_decode_duration_seconds).",
            "s",
            *quantiles("image_decode_duration_seconds", "", (0.5, 0.95), ""),
        ),
        w=8,
        h=8,
    )
    add(
        bargauge.Panel()
        .title("Top predicted classes (dashboard range)")
        .description("The 10 most frequent top-1 classes over the dashboard's time range.")
        .unit("short")
        .with_target(
            query(
                "topk(10, sum by (class_name) (increase(predicted_class_total"
                f"{{{APP}}}[$__range])))",
                "{{class_name}}",
                instant=True,
            )
        ),
        w=12,
        h=8,
    )
    add(
        table.Panel()
        .title("Loaded model per pod")
        .description(
            "model_info: model, weights and their source, backend, device, dtype, compiled."
        )
        .with_target(
            query(
                "max by (pod, model, weights, weights_source, backend, device, dtype, compiled) "
                f"(model_info{{{APP}}})",
                instant=True,
            )
        ),
        w=8,
        h=8,
    )
    add(
        stat_panel(
            "Model load time",
            "Seconds each pod took to load and warm its model at start-up.",
            "s",
            f"max(model_load_duration_seconds{{{APP}}})",
        ),
        w=4,
        h=8,
    )

    layout.row("Batching and admission")
    add(
        timeseries_panel(
            "Average batch size",
            "Images per model forward pass.",
            "short",
            query(
                f"sum(rate(batch_size_sum{{{APP}}}{RATE})) / "
                f"sum(rate(batch_size_count{{{APP}}}{RATE}))",
                "images per forward pass",
            ),
        ),
        w=6,
        h=8,
    )
    add(
        timeseries_panel(
            "Queue depth",
            "Images waiting in the batch queue, per pod.",
            "short",
            query(f"sum by (pod) (queue_depth{{{APP}}})", "{{pod}}"),
        ),
        w=6,
        h=8,
    )
    add(
        timeseries_panel(
            "Queue wait (p50, p95)",
            "Time an image waits in the queue before its forward pass begins.",
            "s",
            *quantiles("queue_wait_seconds", "", (0.5, 0.95), ""),
        ),
        w=6,
        h=8,
    )
    add(
        timeseries_panel(
            "Rejected / s by reason",
            "Images refused or dropped before inference (queue_full, expected_wait, "
            "decode_memory, body_memory, deadline).",
            "short",
            query(f"sum by (reason) (rate(rejected_requests_total{{{APP}}}{RATE}))", "{{reason}}"),
        ),
        w=6,
        h=8,
    )
    add(
        timeseries_panel(
            "Image URL fetch time by outcome (p95)",
            "Time to download image URLs, by outcome (ok or the error code).",
            "s",
            *quantiles("url_fetch_duration_seconds", "outcome", (0.95,), "{{outcome}}"),
        ),
        w=6,
        h=8,
    )
    add(
        timeseries_panel(
            "Image size (p50, p95)",
            "Size of received images, uploads and URL downloads.",
            "bytes",
            *quantiles("image_size_bytes", "", (0.5, 0.95), ""),
        ),
        w=6,
        h=8,
    )
    add(
        memory_budget_panel(
            "decode",
            "images being decoded now (their measured peak)",
            "SERVING_MAX_PIXELS_IN_FLIGHT",
            "An image that would exceed it waits",
        ),
        w=6,
        h=8,
    )
    add(
        memory_budget_panel(
            "body",
            "request bodies being read and answered (Content-Length times what the route holds "
            "per byte)",
            "SERVING_MAX_BODY_BYTES_IN_FLIGHT",
            "A body that does not fit waits",
        ),
        w=6,
        h=8,
    )

    layout.row("Pods")
    add(
        stat_panel(
            "Replicas up",
            "Targets of this job that Prometheus scrapes successfully (up == 1).",
            "short",
            f"count({UP} == 1)",
        ),
        w=4,
        h=8,
    )
    add(
        timeseries_panel(
            "Replicas (HPA current, desired, max)",
            "The HorizontalPodAutoscaler named like the job (kube-state-metrics).",
            "short",
            *[
                query(
                    f'max by (horizontalpodautoscaler) ({metric}{{namespace=~"$namespace"}}'
                    " and on (namespace, horizontalpodautoscaler) "
                    f'label_replace({UP}, "horizontalpodautoscaler", "$1", "job", "(.+)"))',
                    legend,
                    ref,
                )
                for ref, metric, legend in (
                    ("A", "kube_horizontalpodautoscaler_status_current_replicas", "current"),
                    ("B", "kube_horizontalpodautoscaler_status_desired_replicas", "desired"),
                    ("C", "kube_horizontalpodautoscaler_spec_max_replicas", "max"),
                )
            ],
        ),
        w=10,
        h=8,
    )
    add(
        timeseries_panel(
            "Container restarts (1h)",
            "Restarts of the server container per pod over the last hour (kube-state-metrics).",
            "short",
            query(
                "sum by (pod) (increase(kube_pod_container_status_restarts_total"
                '{namespace=~"$namespace", pod=~"$pod", container="server"}[1h])'
                f" and on (namespace, pod) {UP})",
                "{{pod}}",
            ),
        ),
        w=10,
        h=8,
    )
    add(
        timeseries_panel(
            "CPU per pod (container, cAdvisor)",
            "CPU cores used by the server container (cAdvisor through the kubelet).",
            "short",
            query(
                "sum by (pod) (rate(container_cpu_usage_seconds_total"
                f'{{namespace=~"$namespace", pod=~"$pod", container="server"}}{RATE})'
                f" and on (namespace, pod) {UP})",
                "{{pod}}",
            ),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "Memory per pod (container working set, cAdvisor)",
            "Working set of the server container: what the memory limit and OOM kills act on.",
            "bytes",
            query(
                "sum by (pod) (container_memory_working_set_bytes"
                '{namespace=~"$namespace", pod=~"$pod", container="server"}'
                f" and on (namespace, pod) {UP})",
                "{{pod}}",
            ),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "CPU per pod (process)",
            "CPU cores used by the server process, from its own process_cpu_seconds_total "
            "(everywhere, also outside Kubernetes).",
            "short",
            query(f"sum by (pod) (rate(process_cpu_seconds_total{{{APP}}}{RATE}))", "{{pod}}"),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "Memory per pod (process resident)",
            "Resident memory of the server process (process_resident_memory_bytes).",
            "bytes",
            query(f"sum by (pod) (process_resident_memory_bytes{{{APP}}})", "{{pod}}"),
        ),
        w=12,
        h=8,
    )
    prediction_cache(layout)
    return finish(board)


def prediction_cache(layout: Layout) -> None:
    """The prediction cache (app/cache/): the in-process tier ("local", asked for every image)
    and the shared Redis tier ("redis", asked after a local miss where one is configured).
    Last on the dashboard, so the panels above keep their ids (and links to them)."""
    add = layout.add
    lookups = f"prediction_cache_requests_total{{{APP}}}"
    hits = f'prediction_cache_requests_total{{{APP}, result="hit"}}'
    redis = f'prediction_cache_requests_total{{{APP}, tier="redis"}}'
    layout.row("Prediction cache")
    add(
        timeseries_panel(
            "Cache hit ratio (overall and per tier)",
            "Overall: images answered from either tier (local hits + Redis hits) per image "
            "looked up (every image asks the local tier first). Per tier: that tier's hits per "
            "lookup in it (Redis lookups are the local misses; its errors count as misses).",
            "percentunit",
            query(
                f"(sum(rate({hits}{RATE})) or vector(0))"
                f' / sum(rate(prediction_cache_requests_total{{{APP}, tier="local"}}{RATE}))',
                "overall",
            ),
            query(
                f"(sum by (tier) (rate({hits}{RATE})) or 0 * sum by (tier) (rate({lookups}{RATE})))"
                f" / sum by (tier) (rate({lookups}{RATE}))",
                "{{tier}}",
                "B",
            ),
        )
        .min(0)
        .max(1),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Cache lookups / s by tier and result",
            "Lookups per second in each tier by result: hit, miss, and error (Redis only: a "
            "timeout, a refused connection, a bad value, or skipped while its circuit breaker "
            "is open).",
            "ops",
            query(
                f"sum by (tier, result) (rate({lookups}{RATE}))",
                "{{tier}} {{result}}",
            ),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Cache memory held in process",
            "Bytes held by each pod's in-process tier (prediction_cache_bytes), bounded by "
            "SERVING_CACHE_BYTES.",
            "bytes",
            query(f"sum by (pod) (prediction_cache_bytes{{{APP}}})", "{{pod}}"),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Redis errors / s by pod",
            "Redis lookups that failed per second, per pod (timeouts, refused connections, bad "
            "values, skipped by the open circuit breaker): each is a miss, the image is "
            "classified. 0 while Redis answers; no series where no Redis is configured.",
            "ops",
            query(
                f'sum by (pod) (rate(prediction_cache_requests_total{{{APP}, tier="redis", '
                f'result="error"}}{RATE})) or 0 * sum by (pod) (rate({redis}{RATE}))',
                "{{pod}}",
            ),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Redis up per pod",
            "prediction_cache_redis_up: 1 when the pod's last Redis call or PING (every 5 s) "
            "succeeded, 0 while they fail (alert ResNetServingCacheRedisDown when every pod "
            "reports 0). No series where no Redis is configured.",
            "short",
            query(f"max by (pod) (prediction_cache_redis_up{{{APP}}})", "{{pod}}"),
        )
        .min(0)
        .max(1),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Redis latency by op (p50, p95)",
            "Redis round trips of the cache by operation, failed and timed-out ones included "
            "(prediction_cache_redis_duration_seconds; SERVING_CACHE_REDIS_TIMEOUT_MS caps "
            "them).",
            "s",
            *quantiles("prediction_cache_redis_duration_seconds", "op", (0.5, 0.95), "{{op}}"),
        ),
        w=8,
        h=8,
    )


def ab() -> dict[str, Any]:
    """Stable and canary side by side: every panel by `model_version` (SERVING_MODEL_VERSION:
    chart values `modelVersion` and `canary.modelVersion`). With one version it shows one."""
    board = (
        dashboard.Dashboard("resnet-serving / A/B")
        .uid("resnet-serving-ab")
        .description(
            "Two model versions of resnet-serving side by side (an A/B test: the stable and the "
            "canary behind the router, told apart by the model_version label of every metric): "
            "traffic, errors, latency, top-1 scores and the shadow comparison of their answers. "
            "Generated by scripts/dashboards.py."
        )
        .tags([TAG])
        .link(other_dashboards())
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            query_variable("namespace", "Namespace", "label_values(model_info, namespace)")
        )
        .with_variable(
            query_variable("job", "Job", 'label_values(model_info{namespace=~"$namespace"}, job)')
        )
    )
    layout = Layout(board)
    add: Callable[..., None] = layout.add
    by = "sum by (model_version)"
    api_rate = f"{by} (rate(request_count_total{{{AB_API}}}{RATE}))"

    layout.row("Versions")
    add(
        stat_panel(
            "Ready pods by version",
            "Pods of each version whose model is loaded and warmed and that are not draining "
            "(model_ready).",
            "short",
            f"{by} (model_ready{{{AB}}})",
            "{{model_version}}",
        ),
        w=6,
        h=6,
    )
    add(
        timeseries_panel(
            "Share of API requests by version",
            "Each version's share of the API requests answered (probes and scrapes left out): "
            "about canary.trafficPercent for the canary, plus the shadow copies it answers "
            "(canary.shadowPercent of the stable's /predict images).",
            "percentunit",
            query(
                f"{api_rate} / ignoring (model_version) group_left "
                f"sum (rate(request_count_total{{{AB_API}}}{RATE}))",
                "{{model_version}}",
            ),
        )
        .min(0)
        .max(1),
        w=9,
        h=6,
    )
    add(
        table.Panel()
        .title("Loaded model by version")
        .description("model_info of each version: model, weights and their source, backend.")
        .with_target(
            query(
                "max by (model_version, model, weights, weights_source, backend) "
                f"(model_info{{{AB}}})",
                instant=True,
            )
        ),
        w=9,
        h=6,
    )

    layout.row("Traffic and errors")
    add(
        timeseries_panel(
            "API requests / s by version",
            "API requests answered per second by each version (probes and scrapes left out; "
            "ResNetServingCanaryWorse compares only with canaryWorse.minRequestRate on both).",
            "reqps",
            query(api_rate, "{{model_version}}"),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "5xx ratio (API) by version",
            "Share of each version's API requests answered 5xx: ResNetServingCanaryWorse fires "
            "when the canary's exceeds the stable's by canaryWorse.errorRatioMargin and "
            "errorRatioFactor times.",
            "percentunit",
            query(
                f'({by} (rate(request_count_total{{{AB_API}, status=~"5.."}}{RATE}))'
                f" or 0 * {api_rate}) / {api_rate}",
                "{{model_version}}",
            ),
        ).thresholds(absolute_thresholds((0.005, "orange"), (0.05, "red"))),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Errors / s by version and code",
            "Error responses per second of each version by the stable error code of docs/API.md.",
            "reqps",
            query(
                f"sum by (model_version, code) (rate(request_errors_total{{{AB}}}{RATE}))",
                "{{model_version}} {{code}}",
            ),
        ),
        w=8,
        h=8,
    )

    layout.row("Latency")
    add(
        timeseries_panel(
            "Latency /predict by version (p50, p95)",
            "POST /predict, request received to response sent, per version: "
            "ResNetServingCanaryWorse fires when the canary's p95 exceeds the stable's "
            "canaryWorse.latencyFactor times.",
            "s",
            *quantiles(
                "request_duration_seconds",
                "model_version",
                (0.5, 0.95),
                "{{model_version}}",
                scope=AB_LATENCY,
            ),
        ),
        w=12,
        h=8,
    )
    add(
        timeseries_panel(
            "Inference time per batch by version (p50, p95)",
            "Model forward pass per batch, softmax included, per version "
            "(inference_duration_seconds): the model's own cost, without queueing and HTTP.",
            "s",
            *quantiles(
                "inference_duration_seconds",
                "model_version",
                (0.5, 0.95),
                "{{model_version}}",
                scope=AB,
            ),
        ),
        w=12,
        h=8,
    )

    layout.row("Predictions")
    add(
        timeseries_panel(
            "Predictions / s by version",
            "Images classified per second by each version.",
            "short",
            query(f"{by} (rate(prediction_count_total{{{AB}}}{RATE}))", "{{model_version}}"),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            "Top-1 score by version (p10, p50, p90)",
            "Quantiles of the top-1 probability of each image answered (prediction_top1_score, "
            "cache hits included): how sure each version is. A version that is less sure on "
            "the same traffic fits it worse.",
            "percentunit",
            *quantiles(
                "prediction_top1_score",
                "model_version",
                (0.1, 0.5, 0.9),
                "{{model_version}}",
                scope=AB,
            ),
        )
        .min(0)
        .max(1),
        w=8,
        h=8,
    )
    add(
        bargauge.Panel()
        .title("Top-1 score distribution by version (dashboard range)")
        .description(
            "Share of each version's answers with a top-1 probability at or below each bucket "
            "bound, over the dashboard's time range (cumulative: the bar of 0.5 counts every "
            "answer up to 0.5)."
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .with_target(
            query(
                "sum by (model_version, le) (increase(prediction_top1_score_bucket"
                f'{{{AB}, le!="+Inf"}}[$__range])) / on (model_version) group_left '
                f"{by} (increase(prediction_top1_score_count{{{AB}}}[$__range]))",
                "{{model_version}} <= {{le}}",
                instant=True,
            )
        ),
        w=8,
        h=8,
    )

    layout.row("Shadow comparison")
    shadow = f"shadow_comparisons_total{{{AB}"
    add(
        timeseries_panel(
            SHADOW_PANELS[0],
            "Of the images the stable's pods also sent to the canary (canary.shadowPercent), "
            "the share on which the canary's top-1 class differed from the stable's answer "
            "(failed and dropped copies left out). By the version that shadows (the stable's).",
            "percentunit",
            query(
                f'{by} (rate({shadow}, result="disagree"}}{RATE}))'
                f' / {by} (rate({shadow}, result=~"agree|disagree"}}{RATE}))',
                "{{model_version}}",
            ),
        )
        .min(0)
        .max(1),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            SHADOW_PANELS[1],
            "Shadow copies per second by result: agree, disagree (top-1 classes equal or "
            "not), error (the copy failed, timed out or got no prediction) and dropped "
            "(SERVING_SHADOW_CONCURRENCY copies already in flight).",
            "ops",
            query(
                f"sum by (model_version, result) (rate({shadow}}}{RATE}))",
                "{{model_version}} {{result}}",
            ),
        ),
        w=8,
        h=8,
    )
    add(
        timeseries_panel(
            SHADOW_PANELS[2],
            "Time of each shadow call to the canary, failed ones included "
            "(shadow_duration_seconds): the canary's answer time under the copies' load. "
            "The stable's own answers never wait for it.",
            "s",
            *quantiles(
                "shadow_duration_seconds",
                "model_version",
                (0.5, 0.95),
                "{{model_version}}",
                scope=AB,
            ),
        ),
        w=8,
        h=8,
    )
    return finish(board)


def finish(board: dashboard.Dashboard) -> dict[str, Any]:
    """The SDK's model as plain JSON data, with what the SDK leaves out."""
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            # Grafana shows `definition` in the variable editor; the SDK has no setter for it.
            variable["definition"] = variable["query"]
    return data


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "resnet-serving-overview.json": overview,
    "resnet-serving-ab.json": ab,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path = OUT_DIR / name
        fresh = render(name)
        if args.check:
            if not path.is_file() or path.read_text() != fresh:
                stale.append(name)
            continue
        path.write_text(fresh)
        print(f"dashboards: wrote {path.relative_to(ROOT)}")
    if stale:
        print(
            f"dashboards: stale {', '.join(stale)}: run `python scripts/dashboards.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
