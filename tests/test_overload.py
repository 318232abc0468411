"""Three times the sustainable load against a real server: it keeps answering, with 200, 503
(with Retry-After) or 504 and nothing else, nothing crashes, throughput comes back (half the
rate measured before, within 30 s), and it exits cleanly. Behaviour only: how fast refusals
come, how long accepted requests wait, how much memory grows and how soon throughput recovers
are figures of the benchmark (the minute-long run of the same command in docs/PERFORMANCE.md,
recorded in bench/results/overload*.json), never assertions here: a bound that held on one
machine failed on a fresh one.

The load generator runs in a process of its own, as in the benchmark: inside pytest's large
process its own event loop (and garbage collector) would add seconds to what it measures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.overload import failed_claims
from helpers.process import run_module


@pytest.mark.slow
def test_three_times_the_sustainable_load(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    out = tmp_path / "overload.json"
    # Recovered once a second's successes reach half the rate measured before the burst: the
    # claim here is that the server is not left wedged; 5 s of measuring on a shared machine
    # can read the sustainable rate high, and the benchmark (0.9, a minute) holds the figure.
    args = ["--model", "resnet18", "--clients", "8", "--measure", "5", "--burst", "12",
            "--recovery-fraction", "0.5"]  # fmt: skip
    completed = run_module("bench.overload", *args, "--json", str(out))
    # Its own stderr says which claim failed and ends with the server's log.
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    burst = report["burst"]
    # Figures for the record (the test report), not for judging.
    for key in ("accepted", "refused", "timed_out", "accepted_p95_ms", "accepted_server_p95_ms",
                "refused_p95_ms", "rss_before_mb", "rss_peak_mb"):  # fmt: skip
        record_property(key, burst[key])
    record_property("recovery_s", report["recovery_s"])
    assert burst["other"] == {}, "every request got 200, 503 or 504: no errors, no hangs"
    assert burst["accepted"] > 0
    assert burst["refused"] > 0, "3x the sustainable load must be shed"
    assert burst["refused_without_retry_after"] == 0, "every 503 says when to retry"
    assert report["server_alive_after_burst"]
    assert report["recovery_s"] is not None, report["recovery_rps_per_second"]
    assert report["server_exit_code"] == 0


def test_a_failed_run_names_what_failed() -> None:
    healthy = {"burst": {"other": {}}, "server_alive_after_burst": True}
    assert failed_claims(healthy) == []
    broken = {"burst": {"other": {"RemoteProtocolError": 3}}, "server_alive_after_burst": False}
    problems = failed_claims(broken)
    assert any("RemoteProtocolError" in p and "3" in p for p in problems)
    assert any("not running" in p for p in problems)
