"""A minimal OTLP/HTTP trace receiver: what a collector does on its first step, and no more.

POST /v1/traces with a protobuf ExportTraceServiceRequest (gzip or not) is decoded, its spans
counted, and answered 200 with an ExportTraceServiceResponse, as the OTLP specification asks.
GET /stats says what came (spans, by name too; exports; bytes) as JSON; GET /ready answers
200 once it listens. Optionally (`keep=True`) each span's trace id, name and resource
attributes are kept, for tests that look for particular spans.

It runs in a thread of the caller (`Receiver(...).start()`) or as its own process, so that its
CPU shows apart from the server's and the load generator's (bench/tracing.py):

    python -m harness.otlp_receiver --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


@dataclass
class Counts:
    spans: int = 0
    exports: int = 0  # accepted POSTs to /v1/traces
    bytes: int = 0  # request bodies as they came (compressed where they were)
    rejected: int = 0  # POSTs that were not a decodable protobuf export
    names: dict[str, int] = field(default_factory=dict)  # spans by name


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # hex
    name: str
    resource: dict[str, str]  # string-valued resource attributes


class Receiver:
    """An OTLP/HTTP trace receiver on `host`:`port` (0: a free port, then see `.port`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, keep: bool = False) -> None:
        self.keep = keep
        self.counts = Counts()
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def receive(self, body: bytes, encoding: str) -> bytes:
        """One export's body, decoded and counted; the response's body. Raises ValueError
        for a body that is not an export."""
        raw = gzip.decompress(body) if encoding == "gzip" else body
        try:
            request = ExportTraceServiceRequest.FromString(raw)
        except Exception as exc:  # protobuf's DecodeError, whichever implementation is in
            raise ValueError(f"not an ExportTraceServiceRequest: {exc}") from None
        spans = 0
        names: Counter[str] = Counter()
        kept: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource: dict[str, str] | None = None
            for scope in resource_spans.scope_spans:
                spans += len(scope.spans)
                names.update(s.name for s in scope.spans)
                if not self.keep:
                    continue
                if resource is None:
                    resource = {a.key: a.value.string_value
                                for a in resource_spans.resource.attributes}  # fmt: skip
                kept += [ReceivedSpan(s.trace_id.hex(), s.name, resource) for s in scope.spans]
        with self.lock:
            self.counts.spans += spans
            self.counts.exports += 1
            self.counts.bytes += len(body)
            for name, n in names.items():
                self.counts.names[name] = self.counts.names.get(name, 0) + n
            self.spans += kept
        reply: bytes = ExportTraceServiceResponse().SerializeToString()
        return reply

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return asdict(self.counts)

    def names(self, trace_id: str) -> set[str]:
        """The names of the spans kept of one trace (`keep=True`)."""
        with self.lock:
            return {s.name for s in self.spans if s.trace_id == trace_id}

    def start(self) -> Receiver:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as the SDK's exporter (a requests Session) expects of a collector.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if self.path.split("?")[0] != TRACES_PATH:
                self._answer(404, b"", "text/plain")
                return
            content_type = (self.headers.get("content-type") or "").split(";")[0].strip()
            if content_type != PROTOBUF:  # OTLP/HTTP JSON is not spoken here
                with receiver.lock:
                    receiver.counts.rejected += 1
                self._answer(415, b"", "text/plain")
                return
            try:
                reply = receiver.receive(body, self.headers.get("content-encoding") or "")
            except (ValueError, OSError, EOFError):
                with receiver.lock:
                    receiver.counts.rejected += 1
                self._answer(400, b"", "text/plain")
                return
            self._answer(200, reply, PROTOBUF)

        def do_GET(self) -> None:
            if self.path == "/ready":
                self._answer(200, b"ready\n", "text/plain")
            elif self.path == "/stats":
                self._answer(200, json.dumps(receiver.stats()).encode(), "application/json")
            else:
                self._answer(404, b"", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318, help="0: a free one (printed)")
    args = parser.parse_args(argv)
    receiver = Receiver(args.host, args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever, which runs in this thread: from another.
        threading.Thread(target=receiver.server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"OTLP/HTTP trace receiver on http://{args.host}:{receiver.port}{TRACES_PATH}",
          flush=True)  # fmt: skip
    receiver.server.serve_forever()
    receiver.server.server_close()
    print(json.dumps(receiver.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
