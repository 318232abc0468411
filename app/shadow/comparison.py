"""`Shadow`: takes a copy of each sampled /predict answer, sends it to the other version in the
background, compares the two top-1 classes and counts the outcome
(`shadow_comparisons_total{result}`, `shadow_duration_seconds`; app/telemetry/metrics.py).

`offer` never waits and never raises: the client's answer is already made and is not changed.
At most SERVING_SHADOW_CONCURRENCY copies are in flight; a sampled copy beyond them is not sent
and counted `dropped` (a slow or stopped target costs this process a bounded number of pending
calls, never a queue). Each copy holds its image's bytes until its call ends, so at most
SERVING_SHADOW_CONCURRENCY x SERVING_MAX_UPLOAD_BYTES outside the body memory budget.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from enum import StrEnum
from typing import Any, Protocol

from app.settings.config import Settings
from app.shadow.client import ShadowAnswer, ShadowCallError, ShadowClient
from app.shadow.policy import ShadowPolicy, without_credentials
from app.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class Result(StrEnum):
    AGREE = "agree"
    DISAGREE = "disagree"
    ERROR = "error"
    DROPPED = "dropped"


def compare(ours: int, theirs: int) -> Result:
    """The two versions' top-1 classes (class ids): equal or not."""
    return Result.AGREE if ours == theirs else Result.DISAGREE


class ShadowSender(Protocol):
    """What `Shadow` needs of the client (`client.ShadowClient`; tests use a fake)."""

    async def predict(self, data: bytes, request_id: str) -> ShadowAnswer: ...

    async def aclose(self) -> None: ...


class Shadow:
    def __init__(
        self,
        policy: ShadowPolicy,
        sender: ShadowSender,
        metrics: Metrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._sender = sender
        self._metrics = metrics.shadow()  # registered here: only where shadowing is on
        self._rng = rng or random.Random()  # noqa: S311 (sampling, not security)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failing = False
        self.in_flight = 0
        self.last_version: str | None = None  # the other side's X-Model-Version, last seen

    def offer(self, data: bytes, *, top1: int, request_id: str, shadow_header: str | None) -> bool:
        """After a successful /predict whose top-1 class id is `top1`: maybe send a copy
        (sampling, the no-loop rule); returns whether one went out."""
        if not self.policy.wants(shadow_header, self._rng.random()):
            return False
        if self.in_flight >= self.policy.concurrency:
            self._metrics.comparisons.labels(result=Result.DROPPED.value).inc()
            return False
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._compare(data, top1, request_id), name="shadow-compare"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _compare(self, data: bytes, top1: int, request_id: str) -> None:
        started = time.perf_counter()
        try:
            answer = await self._sender.predict(data, request_id)
        except ShadowCallError as exc:
            self._record(Result.ERROR, started, request_id, str(exc))
        except Exception as exc:  # a fault of ours: still only a shadow, never the answer's
            log.warning("shadow call failed", exc_info=True, extra={"request_id": request_id})
            self._record(Result.ERROR, started, request_id, type(exc).__name__)
        else:
            if answer.version:
                self.last_version = answer.version
            result = compare(top1, answer.top1)
            self._record(result, started, request_id, f"ours {top1}, theirs {answer.top1}")
        finally:
            self.in_flight -= 1

    def _record(self, result: Result, started: float, request_id: str, detail: str) -> None:
        self._metrics.duration.observe(time.perf_counter() - started)
        self._metrics.comparisons.labels(result=result.value).inc()
        extra = {"request_id": request_id}
        # One line when the target starts failing and one when it answers again; each
        # outcome at debug level: a target that is down must not flood the log.
        if result is Result.ERROR and not self._failing:
            self._failing = True
            log.warning("shadow target failing: %s (%s)", detail, self.public_url, extra=extra)
        elif result is not Result.ERROR and self._failing:
            self._failing = False
            log.info("shadow target answering again (%s)", self.public_url, extra=extra)
        log.debug("shadow %s: %s", result.value, detail, extra=extra)

    @property
    def public_url(self) -> str:
        return without_credentials(self.policy.url)

    def describe(self) -> dict[str, Any]:
        """/model's `shadow`."""
        return {
            "url": self.public_url,
            "percent": self.policy.percent,
            "concurrency": self.policy.concurrency,
            "timeout_s": self.policy.timeout_s,
            "in_flight": self.in_flight,
            "version": self.last_version,
        }

    async def close(self) -> None:
        """Calls in flight are abandoned (not counted), then the connection pool closes."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._sender.aclose()


def build_shadow(settings: Settings, metrics: Metrics) -> Shadow | None:
    """The shadow comparison SERVING_SHADOW_* ask for; None when SERVING_SHADOW_URL is empty.
    Its calls present this process's first API key, if any (stable and canary of a release
    share SERVING_API_KEYS)."""
    policy = ShadowPolicy.from_settings(settings)
    if policy is None:
        return None
    key = settings.api_keys[0].get_secret_value() if settings.api_keys else None
    return Shadow(policy, ShadowClient(policy, api_key=key), metrics)
