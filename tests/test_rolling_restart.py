"""Rolling restarts behind a real nginx under continuous load: not one failed request.

The procedure is the benchmark's (`python -m bench.rolling`, see bench/rolling.py), run here as
its own process, as the overload test runs its benchmark. The strict run lets nginx retry
nothing and sends SIGTERM right after the replica leaves the upstream, so requests are still
running on it: each must be answered by the draining replica (a replica that dropped them fails
the run). The abrupt run sends SIGTERM while nginx still routes new requests to the replica,
with the retry policy we recommend for production."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.process import run_module
from helpers.tools import tool

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("clients", "model", "abrupt"),
    [(6, "resnet50", False), (4, "resnet18", True)],
    ids=["strict_proxy", "abrupt_sigterm"],
)
def test_rolling_restart(
    clients: int,
    model: str,
    abrupt: bool,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    tool("nginx")
    out = tmp_path / "rolling.json"
    args = ["--replicas", "2", "--clients", str(clients), "--model", model, "--json", str(out)]
    completed = run_module("bench.rolling", *args, *(["--abrupt"] if abrupt else []))
    assert out.is_file(), completed.stderr[-3000:]
    report = json.loads(out.read_text())
    record_property("requests", report["requests"])
    record_property("failed", report["failed"])
    assert report["failed"] == 0, report["failures"]
    # Load went on through every replacement (how much is a benchmark figure: bench/results/).
    assert len(report["answered_during_replacement"]) == report["replicas"] == 2
    assert all(n > 0 for n in report["answered_during_replacement"]), report["steps"]
    assert report["replica_exit_codes"] == [0, 0]
    assert completed.returncode == 0, completed.stderr[-3000:]
