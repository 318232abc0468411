"""Distributed tracing with OpenTelemetry, configured by the standard `OTEL_*` variables only.

    OTEL_TRACES_EXPORTER          otlp, console or none (the default: tracing off)
    OTEL_EXPORTER_OTLP_ENDPOINT   and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, read by the exporter
    OTEL_EXPORTER_OTLP_PROTOCOL   http/protobuf (the default) or grpc (also ..._TRACES_PROTOCOL)
    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES    read by the SDK's Resource
    OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG   read by the SDK's TracerProvider
    OTEL_BSP_*                    the batch processor's queue, batch size and delays

Spans leave in batches from a thread of the SDK: a collector that is down or slow never holds a
request. What cannot be sent (the queue is full, or an export failed) is counted in
`tracing_spans_dropped_total`. The provider is this app's own, not the process-wide one, so
several apps (tests) in one process keep their traces apart; when tracing is off every tracer
is the API's no-op one and a span costs a function call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from app.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("http/protobuf", "grpc")
INSTRUMENTATION = "resnet-serving"


class TracingConfigError(ValueError):
    """An OTEL_* value this service cannot honour: start-up stops (exit 2), naming it."""


@dataclass(frozen=True)
class TracingConfig:
    exporter: str  # otlp, console or none
    protocol: str  # for otlp: http/protobuf or grpc

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"

    @classmethod
    def off(cls) -> TracingConfig:
        return cls(exporter="none", protocol="http/protobuf")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TracingConfig:
        names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
        names = [n for n in names if n] or ["none"]
        unknown = [n for n in names if n not in EXPORTERS]
        if unknown or len(names) > 1:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')!r}: this service exports "
                f"to one of {', '.join(EXPORTERS)}"
            )
        variable = (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
            if "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" in env
            else "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        protocol = env.get(variable, "http/protobuf").strip().lower() or "http/protobuf"
        if protocol not in PROTOCOLS:
            raise TracingConfigError(
                f"{variable}={protocol!r}: use http/protobuf (port 4318) or grpc (port 4317)"
            )
        _check_batch_sizes(env)
        return cls(exporter=names[0], protocol=protocol)


def _check_batch_sizes(env: Mapping[str, str]) -> None:
    """The batch processor's two sizes, which the SDK would refuse with a traceback."""
    sizes = {}
    for variable, default in (("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
                              ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)):  # fmt: skip
        raw = env.get(variable, "").strip()
        try:
            sizes[variable] = int(raw) if raw else default
        except ValueError:
            raise TracingConfigError(f"{variable}={raw!r}: a whole number") from None
        if sizes[variable] <= 0:
            raise TracingConfigError(f"{variable}={raw!r}: must be positive")
    if sizes["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > sizes["OTEL_BSP_MAX_QUEUE_SIZE"]:
        raise TracingConfigError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE must not exceed OTEL_BSP_MAX_QUEUE_SIZE "
            f"({sizes['OTEL_BSP_MAX_EXPORT_BATCH_SIZE']} > {sizes['OTEL_BSP_MAX_QUEUE_SIZE']})"
        )


class CountingExporter(SpanExporter):
    """The real exporter, with the spans of each failed export counted as dropped."""

    def __init__(self, inner: SpanExporter, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.metrics.spans_dropped.labels(reason="export_failed").inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor; a span that finds its queue full pushes the oldest out, and
    that one is counted. (The SDK keeps the queue private: the pinned version is relied upon,
    and tests/telemetry/test_tracing.py fills the queue to hold it to it.)"""

    def __init__(self, exporter: SpanExporter, metrics: Metrics, **options: Any) -> None:
        super().__init__(exporter, **options)
        self.metrics = metrics

    def on_end(self, span: ReadableSpan) -> None:
        batch = self._batch_processor
        sampled = span.context is not None and span.context.trace_flags.sampled
        if sampled and len(batch._queue) >= batch._max_queue_size:
            self.metrics.spans_dropped.labels(reason="queue_full").inc()
        super().on_end(span)

    def shutdown_within(self, timeout_s: float) -> None:
        """Flush and stop, bounded: the SDK's own shutdown may wait 30 s for a dead collector,
        longer than a pod's grace period leaves."""
        self._batch_processor.shutdown(timeout_millis=int(timeout_s * 1000))


def _otlp_exporter(protocol: str) -> SpanExporter:
    # Imported only when used: each pulls its transport (requests or grpc) in.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


class Tracing:
    """This app's tracer provider (None when off), its tracer, and shutting it down."""

    def __init__(
        self,
        config: TracingConfig,
        metrics: Metrics,
        *,
        exporter: SpanExporter | None = None,
        resource: Resource | None = None,
        processor_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`exporter`: instead of the configured one (tests: the SDK's in-memory exporter)."""
        self.config = config
        self.provider: TracerProvider | None = None
        if exporter is None and not config.enabled:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            return
        if exporter is None:
            exporter = (
                ConsoleSpanExporter()
                if config.exporter == "console"
                else _otlp_exporter(config.protocol)
            )
        # The instrumentations name HTTP attributes by the stable semantic conventions
        # (http.request.method, http.response.status_code, url.path, ...) only when asked by
        # this standard variable, read once per process: asked here unless the operator chose.
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
        # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the sampler
        # comes from OTEL_TRACES_SAMPLER(_ARG) when none is given.
        self.provider = TracerProvider(resource=resource or Resource.create())
        self._processor = CountingBatchProcessor(
            CountingExporter(exporter, metrics), metrics, **(processor_options or {})
        )
        self.provider.add_span_processor(self._processor)
        self.tracer = self.provider.get_tracer(INSTRUMENTATION)
        log.info(
            "tracing on",
            extra={"exporter": config.exporter, "protocol": config.protocol,
                   "sampler": type(self.provider.sampler).__name__},
        )  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def tracer_provider(self) -> trace.TracerProvider:
        """For the instrumentations: this app's provider, or the API's no-op one."""
        return self.provider if self.provider is not None else trace.NoOpTracerProvider()

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000)) if self.provider else True

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Send what is queued, within `timeout_s`, then stop (blocking: call it off the event
        loop)."""
        if self.provider is not None:
            self._processor.shutdown_within(timeout_s)
