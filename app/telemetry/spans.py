"""What the rest of the app takes from the current span: its ids for log lines and metric
exemplars, and attributes set on it. Nothing here needs tracing to be on: with no span (or a
no-op one) every function returns None or does nothing."""

from __future__ import annotations

from opentelemetry import trace


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in W3C hex of the span in progress, when there is a real one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def exemplar() -> dict[str, str] | None:
    """A histogram observation's exemplar: the trace it belongs to, when that trace is sampled
    (an exemplar pointing at a trace the collector never received would lead nowhere)."""
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": format(context.trace_id, "032x")}


def annotate(**attributes: str | int | float | bool) -> None:
    """Attributes on the span in progress (the request's server span in a route)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)
