"""The benchmark tools work end to end (short runs: the real figures are in docs/PERFORMANCE.md,
not asserted here), the load generators count correctly, and bench/oip_compare.py replays what
tritonclient sends."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from app.oip.grpc import grpc_predict_v2_pb2 as pb
from app.oip.tensors import serialize_bytes
from bench import oip_bodies
from bench.lib.load import percentile, run_load, summarise
from bench.lib.servers import process_cpu_s
from bench.oip_compare import Pool, Variant, rotated, with_ratios
from bench.oip_load import Window, closed_loop
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
def test_startup_compares_the_converted_model_with_the_build_time_ir(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    completed = run_module(
        "bench.startup", "--model", "resnet18", "--rounds", "1", "--requests", "2",
        "--json", str(out), timeout_s=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(out.read_text())
    sources = {path: rows[0]["model_source"] for path, rows in result["rounds"].items()}
    assert sources == {"converted": "converted", "ir": "ir"}
    assert result["median"]["ir"]["idle_rss_mib"] > 0
    assert set(result["ratios"]) == {"ready_s", "idle_rss_mib", "rss_after_requests_mib"}


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


@pytest.mark.slow
def test_cache_benchmark_hits_only_where_the_cache_is_on(tmp_path: Path) -> None:
    out = tmp_path / "cache.json"
    completed = run_module(
        "bench.cache", "--model", "resnet18", "--images", "30", "--seconds", "3", "--rounds",
        "1", "--warmup", "1", "--probe", "5", "--json", str(out), timeout_s=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["config"]: row for row in report["configs"]}
    assert list(rows) == ["off", "local", "redis"]
    assert report["machine"]["cpus_available"] >= 1
    assert report["command"].startswith("python -m bench.cache ")
    assert all(row["ok"] > 0 and row["failed"] == 0 for row in rows.values())
    assert all(0 < row["repeat_fraction"] < 1 for row in rows.values())
    off, local, redis = rows["off"], rows["local"], rows["redis"]
    assert off["hits"] == 0
    assert off["metrics_hit_ratio"] is None
    assert off["miss_total_ms"]["n"] == off["answered"]
    assert local["hits"] > 0
    assert local["metrics"]["local_hit"] > 0
    assert redis["hits"] > 0
    assert redis["metrics"]["redis_hit"] > 0
    assert "local_hit" not in redis["metrics"]  # every hit went through Redis
    for row in (local, redis):
        assert row["x_cache_agrees_with_body"]
        assert row["stored_hits"] > 0
        assert row["hit_total_ms"]["n"] == row["stored_hits"]
        assert row["quiet"]["hits"] > 0
    hidden = "<password>"  # what is recorded instead of the password
    assert redis["settings"]["SERVING_CACHE_REDIS_PASSWORD"] == hidden
    assert set(report["goals"]) >= {"speedup_local", "hit_ms_local", "hit_ms_redis"}


@pytest.mark.slow
def test_tracing_benchmark_exports_spans_only_where_tracing_is_on(tmp_path: Path) -> None:
    out = tmp_path / "tracing.json"
    completed = run_module(
        "bench.tracing", "--model", "resnet18", "--seconds", "3", "--warmup", "1", "--rounds",
        "1", "--prime", "0", "--json", str(out), timeout_s=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["config"]: row for row in report["configs"]}
    assert list(rows) == ["off", "sampled", "always"]
    assert report["command"].startswith("python -m bench.tracing ")
    assert report["machine"]["cpus_available"] >= 1
    assert all(row["ok"] > 0 and row["failed"] == 0 for row in rows.values())
    assert all(row["server_exit_codes"] == [0] for row in rows.values())
    off, always = rows["off"], rows["always"]
    assert off["settings"]["OTEL_TRACES_EXPORTER"] == "none"
    assert off["spans_received"] == 0
    assert always["spans_received"] > 0
    assert always["spans_per_request"] >= 1  # every request traced, its server span at least
    assert "POST /predict" in always["span_names"]
    assert rows["sampled"]["settings"]["OTEL_TRACES_SAMPLER_ARG"] == "0.01"
    assert off["throughput_vs_off"] == 1.0
    assert set(report["goals"]) == {"sampled", "always"}
    assert isinstance(report["goals"]["sampled"]["met"], bool)
    sdk = report["sdk_cost_us_per_request"]
    assert sdk["spans_per_request"] > 1
    assert sdk["record_us"] > 0
    assert sdk["export_us"] > 0


@pytest.mark.slow
def test_shadow_benchmark_copies_only_where_it_samples(tmp_path: Path) -> None:
    out = tmp_path / "shadow.json"
    completed = run_module(
        "bench.shadow", "--model", "resnet18", "--seconds", "3", "--warmup", "1", "--rounds",
        "1", "--json", str(out), timeout_s=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["config"]: row for row in report["configs"]}
    assert list(rows) == ["0%", "10%", "100%"]
    assert report["command"].startswith("python -m bench.shadow ")
    assert report["machine"]["cpus_available"] >= 1
    assert all(row["ok"] > 0 and row["failed"] == 0 for row in rows.values())
    assert all(row["server_exit_codes"] == [0] for row in rows.values())
    none, every = rows["0%"], rows["100%"]
    assert none["copies"] == dict.fromkeys(("agree", "disagree", "error", "dropped"), 0.0)
    assert none["target_answered"] == 0
    assert every["copies"]["agree"] + every["copies"]["disagree"] > 0
    assert every["target_answered"] >= every["copies"]["agree"] + every["copies"]["disagree"]
    assert every["settings"]["SERVING_SHADOW_PERCENT"] == "100"
    assert none["throughput_vs_0"] == 1.0
    assert every["cpu_ms_per_request"]["target"] > 0


def test_performance_doc_tables_are_the_recorded_results() -> None:
    from bench.report import DOC, rewrite

    text = DOC.read_text()
    assert rewrite(text) == text, "docs/PERFORMANCE.md is stale: python -m bench.report --write"
    assert "(not measured yet)" not in text, "a results file in bench/results/ is missing"


# --- bench/oip_compare.py: what it replays and how it counts (not its timings) -------------------

IMAGE = photo_bytes("grace_hopper")


def test_binary_body_is_the_image_after_tritonclients_json_header() -> None:
    made = oip_bodies.binary_body(IMAGE, 5)
    length = int(made.headers[oip_bodies.INFERENCE_HEADER])
    header, tail = json.loads(made.body[:length]), made.body[length:]
    (tensor,) = header["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("image", "BYTES", [1])
    assert tensor["parameters"]["binary_data_size"] == len(tail)
    assert tail == struct.pack("<I", len(IMAGE)) + IMAGE
    assert header["outputs"][0]["parameters"]["classification"] == 5
    # tritonclient.http sends no content type, so neither does the replay.
    assert "content-type" not in {k.lower() for k in made.headers}


def test_json_body_carries_the_image_in_base64() -> None:
    made = oip_bodies.json_body(IMAGE, 3)
    document = json.loads(made.body)
    (tensor,) = document["inputs"]
    assert base64.b64decode(tensor["data"][0]) == IMAGE
    assert (tensor["datatype"], tensor["shape"]) == ("BYTES", [1])
    assert document["outputs"] == [{"name": "scores", "parameters": {"classification": 3}}]
    assert made.headers["content-type"] == "application/json"


def test_grpc_request_is_the_message_tritonclient_builds() -> None:
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([IMAGE], dtype=np.object_))
    output = grpcclient.InferRequestedOutput("scores", class_count=5)
    theirs = grpcclient._utils._get_inference_request(
        "resnet50", [tensor], "", "", [output], 0, False, False, 0, None, None
    )
    mine = pb.ModelInferRequest.FromString(oip_bodies.grpc_request("resnet50", IMAGE, 5))
    assert mine == pb.ModelInferRequest.FromString(theirs.SerializeToString())


def test_readers_take_the_first_class_of_each_answer() -> None:
    entries = [b"0.400000:281:tabby", b"0.300000:282:tiger cat"]
    response = pb.ModelInferResponse(
        model_name="resnet50",
        outputs=[pb.ModelInferResponse.InferOutputTensor(name="scores", datatype="BYTES",
                                                         shape=[1, 2])],
        raw_output_contents=[serialize_bytes(entries)],
    )  # fmt: skip
    assert oip_bodies.grpc_top1(response.SerializeToString()) == 281
    rest = {"model_name": "resnet50", "outputs": [
        {"name": "scores", "datatype": "BYTES", "shape": [1, 2],
         "data": [e.decode() for e in entries]}]}  # fmt: skip
    assert oip_bodies.rest_top1(json.dumps(rest).encode(), None) == 281
    predict = {"predictions": [{"class_id": 281, "label": "tabby", "score": 0.4}]}
    assert oip_bodies.predict_top1(json.dumps(predict).encode()) == 281


def test_ratios_are_against_predict_at_the_same_client_count() -> None:
    rows = [
        {"throughput_rps": 20.0, "p50_ms": 50.0, "server_cpu_ms_per_request": 40.0},
        {"throughput_rps": 18.0, "p50_ms": 55.0, "server_cpu_ms_per_request": 44.0},
    ]
    with_ratios(rows)
    assert rows[0]["throughput_vs_predict"] == 1.0
    assert rows[1]["throughput_vs_predict"] == 0.9
    assert rows[1]["p50_vs_predict"] == 1.1
    assert rows[1]["server_cpu_vs_predict"] == 1.1


def test_rotation_gives_each_variant_each_place() -> None:
    variants = [Variant(k, k, "http", b"") for k in "abcd"]
    firsts = {rotated(variants, shift)[0].key for shift in range(4)}
    assert firsts == set("abcd")
    assert [v.key for v in rotated(variants, 5)] == list("bcda")


def test_pool_pools_rounds_and_splits_cpu_per_request() -> None:
    windows = [
        Window(2.0, [0.1] * 10, server_cpu_s=0.5, client_cpu_s=0.05),
        Window(2.0, [0.3] * 10, server_cpu_s=1.5, client_cpu_s=0.15),
    ]
    windows[1].failures["http_503"] = 2
    row = Pool(windows, [1.0, 2.0]).row(Variant("grpc", "gRPC", "grpc", b"x" * 7), 4)
    assert (row["ok"], row["failed"], row["failures"]) == (20, 2, {"http_503": 2})
    assert row["throughput_rps"] == 5.0
    assert row["server_cpu_ms_per_request"] == 100.0
    assert row["client_cpu_ms_per_request"] == 10.0
    assert row["round_rps"] == [5.0, 5.0]
    assert (row["variant"], row["request_bytes"], row["concurrency"]) == ("grpc", 7, 4)


def test_closed_loop_counts_answers_by_outcome() -> None:
    answers = iter(["ok", "http_503"] * 10_000)

    async def send() -> str:
        await asyncio.sleep(0.01)
        return next(answers)

    window = asyncio.run(
        closed_loop([send, send], duration_s=0.5, warmup_s=0.1, server_pid=os.getpid())
    )
    assert window.latencies_s, "no answer counted"
    assert set(window.failures) == {"http_503"}
    assert all(x >= 0.01 for x in window.latencies_s)
    assert window.duration_s == 0.5


def test_process_cpu_is_read_from_proc() -> None:
    before_proc, before_own = process_cpu_s(os.getpid()), time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn CPU so both clocks move
        pass
    spent_proc = process_cpu_s(os.getpid()) - before_proc
    spent_own = time.process_time() - before_own
    # Clock ticks are 10 ms: the two clocks of one process agree to a few ticks.
    assert spent_proc == pytest.approx(spent_own, abs=0.05)


def test_revisions_alternate_so_neither_is_always_first() -> None:
    from bench.revisions import round_order

    order = round_order(4)
    assert order == [0, 1, 1, 0, 0, 1, 1, 0]
    assert order.count(0) == order.count(1) == 4
