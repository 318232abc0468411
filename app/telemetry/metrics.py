"""Prometheus metrics of one serving process, on a registry of its own.

A registry per app (not the global default) keeps several apps in one test process apart.
Names follow Prometheus conventions: base units, `_total` counters, histograms for durations,
bounded label values (routes are templates, classes are the model's fixed label set).
Names are public: dashboards and alerts in the chart depend on them.

Every sample the registry exposes carries `model_version="<SERVING_MODEL_VERSION>"`: one value
per process, added when the registry is collected (`ConstantLabelRegistry`), so no metric
declares it and no call site passes it; both exposition formats and the histograms' exemplars
are unchanged by it. An A/B test's dashboards split stable and canary by it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import RestrictedRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request latency buckets, seconds: dense around the 100 ms target, up to a slow URL fetch.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
STAGE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
# Redis round trips, seconds: tens of microseconds on loopback, milliseconds across a network,
# and the command timeout (tens of ms) at the top.
REDIS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
)  # fmt: skip
# The top-1 probability of an answer: how sure the model was (an A/B test compares the two
# versions' distributions; a drift towards low scores is a model that no longer fits its inputs).
TOP1_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# Shadow calls to the other version (app/shadow/): a whole /predict of another process.
SHADOW_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# SERVING_MODEL_VERSION's default (app/settings/config.py), for a Metrics built without one.
DEFAULT_MODEL_VERSION = "v1"


def with_labels(families: Iterable[Metric], labels: Mapping[str, str]) -> Iterator[Metric]:
    """Each family again, every sample with `labels` added (exemplars and timestamps kept)."""
    for family in families:
        labelled = copy.copy(family)
        labelled.samples = [
            sample._replace(labels={**sample.labels, **labels}) for sample in family.samples
        ]
        yield labelled


class ConstantLabelRegistry(CollectorRegistry):
    """A registry whose every sample carries the same `labels` (bounded: one value each), added
    at collection; `restricted_registry` (the `name[]` filter of prometheus_client's own HTTP
    server, SERVING_METRICS_PORT) adds them too."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        super().__init__(auto_describe=True)
        self.constant_labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        yield from with_labels(super().collect(), self.constant_labels)

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        return _LabelledRestrictedRegistry(names, self)


class _LabelledRestrictedRegistry(RestrictedRegistry):
    def __init__(self, names: Iterable[str], registry: ConstantLabelRegistry) -> None:
        super().__init__(names, registry)
        self.constant_labels = registry.constant_labels

    def collect(self) -> Iterator[Metric]:
        yield from with_labels(super().collect(), self.constant_labels)


class Metrics:
    """Every metric the service exports. One instance per app. `model_version`: the label
    every sample carries (SERVING_MODEL_VERSION)."""

    def __init__(self, *, model_version: str = DEFAULT_MODEL_VERSION) -> None:
        self.model_version = model_version
        self.registry: CollectorRegistry = ConstantLabelRegistry({"model_version": model_version})
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        # --- HTTP ---------------------------------------------------------------------------
        self.request_count = Counter(
            "request_count",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "request_duration_seconds",
            "Time from request received to response sent, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "requests_in_flight",
            "HTTP requests being handled right now.",
            registry=r,
        )
        self.request_errors = Counter(
            "request_errors",
            "Error responses by stable error code (see docs/API.md).",
            ["code"],
            registry=r,
        )

        # --- predictions --------------------------------------------------------------------
        self.prediction_count = Counter(
            "prediction_count",
            "Images classified successfully.",
            ["model"],
            registry=r,
        )
        self.predicted_class = Counter(
            "predicted_class",
            "Top-1 predicted class per image (bounded by the model's class count).",
            ["model", "class_name"],
            registry=r,
        )
        self.top1_score = Histogram(
            "prediction_top1_score",
            "Top-1 probability of each image answered (cache hits included).",
            buckets=TOP1_SCORE_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "inference_duration_seconds",
            "Model forward pass per batch (softmax included).",
            ["model"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.image_decode_duration = Histogram(
            "image_decode_duration_seconds",
            "Image decode and preprocessing per image.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.image_bytes = Histogram(
            "image_size_bytes",
            "Size of received images (uploads and URL downloads).",
            buckets=(1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7),
            registry=r,
        )
        self.url_fetch_duration = Histogram(
            "url_fetch_duration_seconds",
            "Time to download an image URL, by outcome (ok or the error code).",
            ["outcome"],
            buckets=(*STAGE_BUCKETS, 10.0, 30.0),
            registry=r,
        )

        # --- batching -----------------------------------------------------------------------
        self.batch_size = Histogram(
            "batch_size",
            "Images per model forward pass.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "queue_wait_seconds",
            "Time an image waited in the batch queue before its forward pass began.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "Images waiting in the batch queue.",
            registry=r,
        )
        self.rejected = Counter(
            "rejected_requests",
            "Images refused or dropped before inference, by reason.",
            ["reason"],
            registry=r,
        )

        # --- decode memory budget -----------------------------------------------------------
        self.decode_memory_in_flight = Gauge(
            "decode_memory_in_flight_bytes",
            "Decode memory reserved by images being decoded now (their measured peak).",
            registry=r,
        )
        self.decode_memory_budget = Gauge(
            "decode_memory_budget_bytes",
            "The decode memory budget: SERVING_MAX_PIXELS_IN_FLIGHT x 4, or derived from the "
            "memory limit once the model is loaded.",
            registry=r,
        )

        # --- body memory budget -------------------------------------------------------------
        self.body_memory_in_flight = Gauge(
            "body_memory_in_flight_bytes",
            "Body memory reserved by requests being read and answered (Content-Length x the "
            "route's factor).",
            registry=r,
        )
        self.body_memory_budget = Gauge(
            "body_memory_budget_bytes",
            "The body memory budget: SERVING_MAX_BODY_BYTES_IN_FLIGHT, or derived from the "
            "memory limit once the model is loaded.",
            registry=r,
        )

        # --- model state --------------------------------------------------------------------
        self.model_info = Gauge(
            "model_info",
            "The loaded model: always 1, the labels say which model, weights and path run.",
            [
                "model",
                "weights",
                "weights_source",
                "model_source",
                "backend",
                "device",
                "dtype",
                "compiled",
            ],
            registry=r,
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 when the model is loaded and warmed and the process is not draining.",
            registry=r,
        )
        self.model_load_duration = Gauge(
            "model_load_duration_seconds",
            "How long loading and warming the model took at start-up.",
            registry=r,
        )

        # --- prediction cache (app/cache/) ----------------------------------------------------
        self.cache_requests = Counter(
            "prediction_cache_requests",
            "Prediction cache lookups, by tier (local: in process, every lookup; redis: after a "
            "local miss) and result (hit, miss; error: Redis failed, timed out, held a value "
            "that is not this model's entry, or was skipped while its circuit breaker is open).",
            ["tier", "result"],
            registry=r,
        )
        self.cache_bytes = Gauge(
            "prediction_cache_bytes",
            "Bytes held by the in-process tier (bounded by SERVING_CACHE_BYTES).",
            registry=r,
        )
        self.cache_entries = Gauge(
            "prediction_cache_entries", "Entries in the in-process tier.", registry=r
        )
        self.cache_redis_duration = Histogram(
            "prediction_cache_redis_duration_seconds",
            "Redis round trips of the prediction cache, by operation (get, set, ping), timed "
            "out or failed ones included.",
            ["op"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.cache_coalesced = Counter(
            "prediction_cache_coalesced",
            "Requests that waited for an identical image already being classified "
            "(single-flight) instead of classifying it again.",
            registry=r,
        )
        self._cache_redis_up: Gauge | None = None
        self._shadow: ShadowMetrics | None = None

        # --- tracing (app/telemetry/tracing.py) ---------------------------------------------
        self.spans_dropped = Counter(
            "tracing_spans_dropped",
            "Spans never sent to the collector: `queue_full` (the batch queue was full: the "
            "collector is slow or down) or `export_failed` (an export was refused or timed out).",
            ["reason"],
            registry=r,
        )

    def cache_redis_up(self) -> Gauge:
        """`prediction_cache_redis_up`, registered on first use: the series exists only where a
        Redis is configured, so the alert on it never fires where none is."""
        if self._cache_redis_up is None:
            self._cache_redis_up = Gauge(
                "prediction_cache_redis_up",
                "1 when the prediction cache's Redis answered its last call or PING (every "
                "5 s), 0 when it failed.",
                registry=self.registry,
            )
        return self._cache_redis_up

    def shadow(self) -> ShadowMetrics:
        """The shadow comparison's metrics (app/shadow/), registered on first use: they exist
        only where SERVING_SHADOW_URL is set, so a dashboard panel on them stays empty
        elsewhere instead of showing zeros."""
        if self._shadow is None:
            self._shadow = ShadowMetrics(self.registry)
        return self._shadow

    def sample_value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A sample's value as exposed (this process's `model_version` label added to
        `labels`), or None: prometheus_client's `get_sample_value`, for tests and checks."""
        full = {**(labels or {}), "model_version": self.model_version}
        return self.registry.get_sample_value(name, full)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics (which carries the latency
        histograms' exemplars: the trace of a request in a bucket) when the scraper asks for
        it, as Prometheus does, else the classic text format."""
        if accept and "application/openmetrics-text" in accept:
            return openmetrics_latest(self.registry), OPENMETRICS_CONTENT_TYPE  # type: ignore[no-untyped-call]
        return generate_latest(self.registry), CONTENT_TYPE


class ShadowMetrics:
    """`shadow_comparisons_total{result}` and `shadow_duration_seconds`, of the process that
    shadows (its `model_version` is the label every sample carries).

    No label names the other side's version: the shadow target is one fixed URL per process
    (SERVING_SHADOW_URL), which version answers there is what the deployment says (and
    /model shows the last `X-Model-Version` it sent), and a label taken from its answers
    would keep a stale value or grow with every canary rolled out behind that URL."""

    RESULTS = ("agree", "disagree", "error", "dropped")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.comparisons = Counter(
            "shadow_comparisons",
            "Shadow copies of /predict images sent to the other model version, by result: "
            "`agree` / `disagree` (the two top-1 classes are equal / differ), `error` (the "
            "copy failed, timed out or its answer was not a prediction), `dropped` "
            "(SERVING_SHADOW_CONCURRENCY copies were already in flight; not sent).",
            ["result"],
            registry=registry,
        )
        self.duration = Histogram(
            "shadow_duration_seconds",
            "Time of each shadow call to the other version, failed ones included.",
            buckets=SHADOW_BUCKETS,
            registry=registry,
        )
        for result in self.RESULTS:  # every series from the start: rates, not absent series
            self.comparisons.labels(result=result)
