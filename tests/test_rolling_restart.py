"""Rolling restarts behind a real nginx under continuous load: not one failed request.

See bench/rolling.py for the procedure. The strict run lets nginx retry nothing and sends
SIGTERM right after the replica leaves the upstream, so requests are still running on it: each
must be answered by the draining replica (a replica that dropped them fails the run). The abrupt
run sends SIGTERM while nginx still routes new requests to the replica, with the retry policy we
recommend for production."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.rolling import RollingReport, rolling_restart


def _check(report: RollingReport, record: Callable[[str, object], None]) -> None:
    record("requests", report.requests)
    record("failed", report.failed)
    print(f"rolling restart: {report.requests} requests, {report.failed} failed, {report.steps}")
    assert report.failed == 0, report.failures
    # Load went on through every replacement (how much is a benchmark figure: bench/results/).
    assert len(report.answered_during_replacement) == report.replicas
    assert all(n > 0 for n in report.answered_during_replacement), report.steps
    assert report.replica_exit_codes == [0] * report.replicas


@pytest.mark.slow
def test_rolling_restart_strict_proxy(record_property: Callable[[str, object], None]) -> None:
    _check(rolling_restart(replicas=2, clients=6, model="resnet50"), record_property)


@pytest.mark.slow
def test_rolling_restart_abrupt_sigterm(record_property: Callable[[str, object], None]) -> None:
    _check(rolling_restart(replicas=2, clients=4, model="resnet18", abrupt=True), record_property)
