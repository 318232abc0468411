"""/metrics on its own port (SERVING_METRICS_PORT), for clusters that keep scrapes off the
serving port; with 0 the main app's /metrics route serves the same registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import start_http_server

from app.telemetry.metrics import Metrics


@contextlib.contextmanager
def metrics_port(port: int, host: str, metrics: Metrics) -> Iterator[None]:
    """Serve the registry on `port` while the context is open (nothing when `port` is 0)."""
    if not port:
        yield
        return
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
