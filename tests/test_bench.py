"""The benchmark tools work end to end (short runs: the real figures are in docs/PERFORMANCE.md,
not asserted here) and the load generator counts correctly."""

from __future__ import annotations

import asyncio
import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from bench.loadgen import percentile, run_load, summarise
from bench.soak import growth
from helpers.images import photo_bytes
from helpers.process import ManagedProcess, run_module


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 95) == 0.0


def test_summary_counts_failures_apart_from_latencies() -> None:
    result = summarise(4, 2.0, [0.1, 0.2, 0.3], Counter({"http_503": 2}))
    assert result.ok == 3
    assert result.failed == 2
    assert result.throughput_rps == 1.5
    assert result.p50_ms == 200.0


def test_growth_starts_after_warm_up() -> None:
    samples = [{"t_s": 5.0, "rss": 50.0}, {"t_s": 60.0, "rss": 100.0}, {"t_s": 120.0, "rss": 103.0}]
    assert growth(samples, "rss", after_s=60) == pytest.approx(0.03)


def test_load_generator_against_the_real_server(server: ManagedProcess) -> None:
    result = asyncio.run(
        run_load(
            f"{server.base_url}/predict",
            photo_bytes("grace_hopper"),
            content_type="image/jpeg",
            concurrency=4,
            duration_s=2.0,
            warmup_s=0.5,
        )
    )
    assert result.ok > 0
    assert result.failed == 0
    assert 0 < result.p50_ms <= result.p95_ms <= result.max_ms


def test_load_generator_reports_errors_by_status(server: ManagedProcess) -> None:
    result = asyncio.run(
        run_load(
            f"{server.base_url}/predict",
            b"not an image",
            content_type="image/jpeg",
            concurrency=2,
            duration_s=1.0,
            warmup_s=0.2,
        )
    )
    assert result.ok == 0
    assert result.failures.get("http_400", 0) == result.failed > 0


@pytest.mark.slow
def test_run_all_quick_writes_results_and_plot(tmp_path: Path) -> None:
    completed = run_module(
        "bench.run_all", "--quick", "--model", "resnet18", "--out", str(tmp_path), timeout_s=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "run_all.json").read_text())
    assert report["machine"]["cpus_available"] >= 1
    configs = {row["config"] for row in report["e2e"]}
    assert any(c.startswith("baseline") for c in configs)
    assert any(c.startswith("serving defaults (OpenVINO") for c in configs)
    assert any(c.startswith("serving torch") for c in configs)
    assert all(row["failed"] == 0 for row in report["e2e"])
    assert all(row["ready_s"] > 0 for row in report["e2e"])
    ceilings = {(row["backend"], row["kind"]) for row in report["ceiling"]}
    assert {("openvino-bf16", "pipeline"), ("openvino-fp32", "pipeline")} & ceilings
    assert report["targets"]["judged_config"].startswith("serving defaults")
    assert "p50_ms_at_1" in report["targets"]  # --quick measures 1 and 4 clients only
    png = tmp_path / "throughput_latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_locustfile_runs_headless(server: ManagedProcess, tmp_path: Path) -> None:
    prefix = tmp_path / "stats"
    users = ["-u", "4", "-r", "4", "-t", "4s"]
    completed = run_module(
        "locust", "-f", "bench/locustfile.py", "--headless", *users, "--only-summary",
        "--host", server.base_url, "--csv", str(prefix), timeout_s=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    with (tmp_path / "stats_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0


def test_performance_doc_tables_are_the_recorded_results() -> None:
    from bench.report import DOC, rewrite

    text = DOC.read_text()
    assert rewrite(text) == text, "docs/PERFORMANCE.md is stale: python -m bench.report --write"
    assert "(not measured yet)" not in text, "a results file in bench/results/ is missing"
