"""Zero-downtime probe: keep POSTing an image to /predict until told to stop; fail on any error.

The CI's kind job runs it in a pod next to the release (through the Service, as a client in
the cluster would), starts a `helm upgrade` once it prints "loadgen: running", then creates the
stop file. Every request uses a new connection, so each one is routed by the Service to a pod
that is ready at that moment. Any status but 200, any connection error or timeout is a failed
request, and one failed request fails the run (exit status 1), as does too little traffic or
hitting --max-seconds before the stop file appeared (the rollout was then not fully covered).

    python loadgen.py --url http://resnet-serving:8080/predict --stop-file /tmp/stop

Standard library only, plus Pillow when no --image is given (a synthetic JPEG is made).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MAX_PRINTED_FAILURES = 20


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    first_ok: threading.Event = field(default_factory=threading.Event)

    def success(self, seconds: float) -> None:
        with self.lock:
            self.ok += 1
            self.latencies.append(seconds)
        self.first_ok.set()

    def failure(self, reason: str) -> None:
        with self.lock:
            self.failed += 1
            self.errors[reason] += 1
            printed = self.failed <= MAX_PRINTED_FAILURES
        if printed:
            print(f"loadgen: FAIL {reason}", flush=True)


def synthetic_jpeg() -> bytes:
    from PIL import Image  # only needed without --image

    image = Image.new("RGB", (320, 240))
    pixels = image.load()
    assert pixels is not None
    for x in range(320):
        for y in range(240):
            pixels[x, y] = (x % 256, y % 256, (x * y) % 256)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def post_once(url: str, body: bytes, content_type: str, timeout: float) -> tuple[bool, str]:
    """One request on a fresh connection: (ok, reason)."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    conn_cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "localhost", parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": content_type, "Connection": "close"},
        )
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    if response.status != 200:
        return False, f"HTTP {response.status}: {payload[:200]!r}"
    try:
        predictions = json.loads(payload)["predictions"]
    except (ValueError, KeyError, TypeError):
        return False, f"HTTP 200 without predictions: {payload[:200]!r}"
    if not predictions:
        return False, "HTTP 200 with an empty predictions list"
    return True, ""


def worker(
    args: argparse.Namespace, body: bytes, content_type: str, tally: Tally, stop: threading.Event
) -> None:
    while not stop.is_set():
        started = time.monotonic()
        ok, reason = post_once(args.url, body, content_type, args.timeout)
        if ok:
            tally.success(time.monotonic() - started)
        else:
            tally.failure(reason)
            stop.wait(0.2)  # do not spin on a dead endpoint


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.image:
        body = Path(args.image).read_bytes()
        content_type = "image/png" if args.image.lower().endswith(".png") else "image/jpeg"
    else:
        body, content_type = synthetic_jpeg(), "image/jpeg"
    stop_file = Path(args.stop_file)
    stop_file.unlink(missing_ok=True)

    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(args, body, content_type, tally, stop), daemon=True)
        for _ in range(args.concurrency)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()

    reason_stopped = "stop file"
    if tally.first_ok.wait(args.startup_seconds):
        print(f"loadgen: running against {args.url}", flush=True)
    else:
        reason_stopped = f"no successful request within {args.startup_seconds:g} s"
        stop.set()
    last_report = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if stop_file.exists():
            break
        if now - started > args.max_seconds:
            reason_stopped = f"--max-seconds {args.max_seconds:g} reached before the stop file"
            break
        if now - last_report >= args.report_every:
            with tally.lock:
                print(
                    f"loadgen: t={now - started:.0f}s ok={tally.ok} failed={tally.failed}",
                    flush=True,
                )
            last_report = now
        stop.wait(0.1)
    stop.set()
    for thread in threads:
        thread.join(args.timeout + 5)

    with tally.lock:
        latencies = sorted(tally.latencies)
        summary: dict[str, object] = {
            "url": args.url,
            "duration_s": round(time.monotonic() - started, 1),
            "stopped_by": reason_stopped,
            "requests": tally.ok + tally.failed,
            "ok": tally.ok,
            "failed": tally.failed,
            "errors": dict(tally.errors.most_common(10)),
            "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "latency_max_s": round(latencies[-1], 3) if latencies else None,
        }
    problems: list[str] = []
    if tally.failed:
        problems.append(f"{tally.failed} failed requests")
    if tally.ok < args.min_requests:
        problems.append(f"only {tally.ok} successful requests (< {args.min_requests})")
    if reason_stopped != "stop file":
        problems.append(reason_stopped)
    summary["passed"] = not problems
    summary["problems"] = problems
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the /predict URL")
    parser.add_argument("--image", help="image file to send (default: a synthetic JPEG)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--stop-file", required=True, help="stop once this file exists")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--startup-seconds", type=float, default=120.0)
    parser.add_argument("--min-requests", type=int, default=20)
    parser.add_argument("--report-every", type=float, default=5.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    summary = run(parse_args(argv))
    print("loadgen: summary " + json.dumps(summary, sort_keys=True), flush=True)
    problems = summary["problems"]
    assert isinstance(problems, list)
    if problems:
        print(f"loadgen: FAILED: {'; '.join(map(str, problems))}", flush=True)
        return 1
    print("loadgen: passed: no failed request", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
