"""Continuous load through the Service, and a watcher of ready pods, both in background
threads while a test changes the cluster. Every request opens its own connection, as clients
behind a Service do: kube-proxy balances connections, not requests, so a kept-alive connection
would pin a client to one pod and hide what a rollout does to new connections.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from e2e.kube import Cluster


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no HTTP answer (connection refused/reset, timeout)
    error: str  # exception class, or the JSON error code of a non-200 answer; "" when 200


@dataclass
class Load:
    """N client threads posting IMAGE to URL/predict until stopped."""

    url: str
    image: bytes
    clients: int = 4
    timeout_s: float = 30.0
    content_type: str = "image/jpeg"
    # The load is for the model (rollouts, autoscaling): one image sent over and over would be
    # answered by the prediction cache. None lets the cache answer (test_08_cache.py).
    cache_control: str | None = "no-store"
    # Other images the clients send in turn after IMAGE (the cache's tests); none by default.
    more_images: tuple[bytes, ...] = ()
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def _client(self) -> None:
        headers = {"Content-Type": self.content_type, "Connection": "close"}
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        images = (self.image, *self.more_images)
        sent = 0
        while not self._stop.is_set():
            started = time.monotonic()
            status: int | None = None
            error = ""
            try:
                with httpx.Client(timeout=self.timeout_s) as client:
                    image = images[sent % len(images)]
                    sent += 1
                    response = client.post(f"{self.url}/predict", content=image, headers=headers)
                status = response.status_code
                if status != 200:
                    error = _error_code(response)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            outcome = Outcome(started, time.monotonic() - started, status, error)
            with self._lock:
                self.outcomes.append(outcome)
            if status is None:
                time.sleep(0.05)  # a refused connection comes back at once: do not spin

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def summary(self) -> dict[str, Any]:
        outcomes = self.snapshot()
        ok = [o for o in outcomes if o.status == 200]
        failures = Counter(
            f"{o.status or 'no answer'} {o.error}".strip() for o in outcomes if o.status != 200
        )
        span = (
            (outcomes[-1].started + outcomes[-1].seconds - outcomes[0].started) if outcomes else 0.0
        )
        latencies = sorted(o.seconds for o in ok)
        return {
            "clients": self.clients,
            "requests": len(outcomes),
            "ok": len(ok),
            "failed": len(outcomes) - len(ok),
            "failures": dict(failures),
            "seconds": round(span, 1),
            "req_per_s": round(len(outcomes) / span, 2) if span else 0.0,
            "p50_ms": _quantile_ms(latencies, 0.50),
            "p95_ms": _quantile_ms(latencies, 0.95),
        }


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "non-json"
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code")) if isinstance(error, dict) else "unknown"


def _quantile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


@dataclass
class ReadyWatcher:
    """Samples the number of ready, not-terminating pods of the release every INTERVAL."""

    cluster: Cluster
    interval_s: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ReadyWatcher:
        self._thread = threading.Thread(target=self._run, name="ready-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            # One failed read is not a measurement: skip it.
            with contextlib.suppress(AssertionError):
                self.samples.append((time.monotonic(), len(self.cluster.ready_pods())))
            self._stop.wait(self.interval_s)

    @property
    def minimum(self) -> int:
        assert self.samples, "the watcher took no sample"
        return min(count for _, count in self.samples)
