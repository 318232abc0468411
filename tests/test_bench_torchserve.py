"""TorchServe as a benchmark peer: its handler computes what torchvision's reference computes,
its configuration keeps everything on loopback with the workers and threads asked for, the
sweep skips it with a message when it is not installed, and the report puts it side by side.
One slow test runs a real TorchServe where bench/torchserve/setup.sh has installed it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torchvision import models

from bench import report
from bench.lib import servers, sweep
from bench.lib.servers import ServerConfig
from bench.lib.targets import evaluate
from bench.torchserve import handler
from bench.torchserve import server as ts_server
from bench.torchserve.server import (
    TorchServeProcess,
    TorchServeSettings,
    missing_reason,
    render_config,
    save_weights,
    worker_env,
)
from helpers.images import PHOTOS, photo, photo_bytes

PORTS = {"inference": 18080, "management": 18081, "metrics": 18082,
         "grpc_inference": 18083, "grpc_management": 18084}  # fmt: skip


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_handler_preprocessing_is_torchvisions_resnet50_v2(name: str) -> None:
    image = photo(name)
    reference = models.ResNet50_Weights.IMAGENET1K_V2.transforms()(image)
    ours = handler.build_transform()(image)
    assert ours.shape == reference.shape == (3, 224, 224)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torchserve-weights")
    save_weights(path / "weights.pt")
    return path


def test_handler_answers_torchvisions_top5_for_each_request_of_a_batch(weights_dir: Path) -> None:
    service = handler.ResNetService()
    service.initialize(str(weights_dir), "weights.pt")
    names = ["grace_hopper", "chelsea"]
    answers = service.predict(
        [{"body": bytearray(photo_bytes(names[0]))}, {"data": photo_bytes(names[1])}]
    )
    # The reference: the baseline server's weights (seed 0) and torchvision's own pipeline.
    torch.manual_seed(0)
    model = models.resnet50(weights=None).eval()
    transform = models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert len(answers) == len(names)
    for name, answer in zip(names, answers, strict=True):
        with torch.inference_mode():
            probs = torch.softmax(model(transform(photo(name)).unsqueeze(0)), dim=1)[0]
        scores, indices = torch.topk(probs, 5)
        assert [p["class_id"] for p in answer] == indices.tolist()
        assert [p["score"] for p in answer] == pytest.approx(scores.tolist(), abs=1e-5)
        categories = models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
        assert [p["label"] for p in answer] == [categories[i] for i in indices.tolist()]


def test_handler_refuses_a_request_without_bytes() -> None:
    with pytest.raises(ValueError, match="raw image bytes"):
        handler.request_body({"body": {"not": "bytes"}})


def test_config_keeps_every_listener_on_loopback_and_loads_the_model(tmp_path: Path) -> None:
    settings = TorchServeSettings(workers=3, batch_size=8, max_batch_delay_ms=10)
    props = properties(render_config(settings, ports=PORTS, model_store=tmp_path))
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:")
    assert props["inference_address"].endswith(":18080")
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert {props["grpc_inference_port"], props["grpc_management_port"]} == {"18083", "18084"}
    assert props["model_store"] == str(tmp_path)
    assert props["load_models"] == "resnet50.mar"
    assert props["disable_system_metrics"] == "true"
    model = json.loads(props["models"])["resnet50"]["1.0"]
    assert model["marName"] == "resnet50.mar"
    assert model["minWorkers"] == model["maxWorkers"] == 3
    assert (model["batchSize"], model["maxBatchDelay"]) == (8, 10)


def test_workers_get_their_thread_count_and_a_private_temp_dir(tmp_path: Path) -> None:
    env = worker_env(TorchServeSettings(workers=1, threads_per_worker=2), tmp_path)
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["TEMP"] == env["TMPDIR"] == str(tmp_path)
    assert Path(env["LOG_LOCATION"]).parent == tmp_path


def test_missing_install_is_named_with_the_fix(tmp_path: Path) -> None:
    reason = missing_reason(tmp_path / "no-venv")
    assert reason is not None
    assert "bench/torchserve/setup.sh" in reason


def test_sweep_skips_torchserve_with_a_message_when_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ts_server, "missing_reason", lambda: "not installed here")
    assert sweep.torchserve_configs("resnet50") == []
    assert "skipping TorchServe: not installed here" in capsys.readouterr().out


def test_sweep_skips_torchserve_for_another_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ts_server, "missing_reason", lambda: None)
    assert sweep.torchserve_configs("resnet18") == []
    assert "serves resnet50 only" in capsys.readouterr().out


def test_sweep_offers_torchserve_configurations_when_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ts_server, "missing_reason", lambda: None)
    monkeypatch.setattr(sweep, "available_cpus", lambda: 2)
    configs = sweep.torchserve_configs("resnet50")
    assert all(c.kind == "torchserve" and c.predict_path == "/predictions/resnet50"
               for c in configs)  # fmt: skip
    settings = {c.torchserve for c in configs}
    assert TorchServeSettings(workers=2, threads_per_worker=1) in settings
    assert TorchServeSettings(workers=1, threads_per_worker=2) in settings
    assert any(s is not None and s.batch_size > 1 for s in settings)


def row(config: str, concurrency: int, rps: float, failed: int = 0) -> dict[str, Any]:
    return {"config": config, "concurrency": concurrency, "throughput_rps": rps, "failed": failed,
            "ok": round(rps * 20), "duration_s": 20.0, "p50_ms": 100.0, "p95_ms": 200.0,
            "ready_s": 5.0, "rss_ready_mb": 900.0, "load_1m": 1.0}  # fmt: skip


def peers_run() -> tuple[list[ServerConfig], list[dict[str, Any]]]:
    configs = [
        ServerConfig("baseline", "baseline"),
        ServerConfig("serving defaults", "serving", backend="openvino-bf16"),
        ServerConfig("TorchServe a", "torchserve", torchserve=TorchServeSettings(2)),
        ServerConfig("TorchServe b", "torchserve", torchserve=TorchServeSettings(1, 2)),
    ]
    e2e = [row("baseline", 10, 10.0), row("serving defaults", 10, 30.0),
           row("TorchServe a", 10, 12.0, failed=3), row("TorchServe b", 10, 15.0),
           row("TorchServe b", 32, 0.0)]  # fmt: skip
    return configs, e2e


def test_targets_compare_the_defaults_with_torchserves_best() -> None:
    configs, e2e = peers_run()
    targets = evaluate(configs, e2e, [])
    assert targets["judged_config"] == "serving defaults"
    assert targets["best_config"] == "serving defaults"  # TorchServe is a peer, not ours
    assert targets["throughput_vs_torchserve_at_10"] == {
        "ratio": 2.0, "torchserve_config": "TorchServe b", "torchserve_rps": 15.0,
        "target": 6.0, "met": False,
    }  # fmt: skip
    # Only our server's failures count against our targets.
    assert targets["failures_by_concurrency"] == {"10": 0, "32": 0}


def test_report_puts_torchserve_side_by_side() -> None:
    configs, e2e = peers_run()
    data = {
        "machine": {"date": "2026-12-01T00:00:00", "cpu": "AMD EPYC", "cpus_available": 2,
                    "amx": False, "avx512_bf16": True, "torch": "2.11.0", "openvino": None},
        "model": "resnet50", "duration_s_per_point": 20.0, "command": "python -m bench.run_all",
        "e2e": e2e, "targets": evaluate(configs, e2e, []),
    }  # fmt: skip
    table = report.sweep(data)
    lines = [line for line in table.splitlines() if line.startswith("| TorchServe")]
    assert [line.split(" | ")[0] for line in lines][:2] == ["| TorchServe a", "| TorchServe b"]
    assert "15.0 rps" in lines[1]
    assert "no answer within the 20 s" in lines[1]  # its 32-client point, not "0 ms"
    targets = report.targets(data)
    assert "vs TorchServe's best in this run (TorchServe b, 15.0 req/s) | 6x | 2.0x" in targets


@pytest.mark.slow
@pytest.mark.skipif(missing_reason() is not None, reason=f"TorchServe: {missing_reason()}")
def test_a_real_torchserve_answers_like_the_handler_in_process(
    tmp_path: Path, weights_dir: Path
) -> None:
    server = TorchServeProcess(TorchServeSettings(workers=1), tmp_path, tmp_path / "ts.log")
    server.start()
    try:
        server.wait_ready(timeout_s=300)  # also checks the worker's OMP_NUM_THREADS
        response = httpx.post(
            server.base_url + server.predict_path,
            content=photo_bytes("grace_hopper"),
            headers={"content-type": "image/jpeg"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert server.rss_bytes() > 0
    finally:
        server.terminate()
    assert server.group_pids() == []  # launcher, JVM and workers all gone
    service = handler.ResNetService()
    service.initialize(str(weights_dir), "weights.pt")  # the same seed as the archive's
    expected = service.predict([{"body": photo_bytes("grace_hopper")}])[0]
    answer = response.json()
    assert [p["class_id"] for p in answer] == [p["class_id"] for p in expected]


class FakeServer:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def terminate(self) -> None:
        self.log.append(f"stop {self.name}")


def test_side_by_side_rotates_servers_per_client_count_and_stops_them_all(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log: list[str] = []

    def start(config: ServerConfig, model: str, log_dir: Path) -> Any:
        log.append(f"start {config.name}")
        return FakeServer(config.name, log), {"ready_s": 1.0}

    def point(config: ServerConfig, server: Any, ready: Any, level: int, d: float) -> Any:
        log.append(f"{level} {config.name}")
        return {"config": config.name, "concurrency": level}

    monkeypatch.setattr(sweep, "start_and_wait", start)
    monkeypatch.setattr(sweep, "measure_point", point)

    def idle(server: Any) -> float:
        log.append("idle")
        return 0.0

    monkeypatch.setattr(sweep, "wait_until_idle", idle)
    configs = [ServerConfig(n, "serving") for n in ("a", "b", "c")]
    rows = sweep.sweep_side_by_side(configs, "resnet50", [1, 10], duration_s=1, log_dir=tmp_path)
    # Each point waits for its server to finish its backlog before the next one measures.
    assert [x for x in log if x != "idle"] == [
        "start a", "start b", "start c", "1 a", "1 b", "1 c", "10 b", "10 c", "10 a",
        "stop a", "stop b", "stop c"]  # fmt: skip
    assert log[3:9] == ["1 a", "idle", "1 b", "idle", "1 c", "idle"]
    assert [(r["config"], r["concurrency"]) for r in rows] == [
        ("a", 1), ("a", 10), ("b", 1), ("b", 10), ("c", 1), ("c", 10)
    ]  # fmt: skip

    log.clear()

    def fails(*args: Any) -> Any:
        raise RuntimeError("load generator died")

    monkeypatch.setattr(sweep, "measure_point", fails)
    with pytest.raises(RuntimeError, match="died"):
        sweep.sweep_side_by_side(configs, "resnet50", [1], duration_s=1, log_dir=tmp_path)
    assert log[-3:] == ["stop a", "stop b", "stop c"]


def test_group_cpu_time_counts_this_process_group() -> None:
    import os

    spent = servers.group_cpu_s(os.getpgid(0))
    sum(i * i for i in range(2_000_000))  # burn some CPU in this process
    assert servers.group_cpu_s(os.getpgid(0)) > spent > 0


def test_group_stat_lists_exactly_the_members_of_a_process_group() -> None:
    """What TorchServeProcess.group_pids and group_cpu_s read: a shell in its own session with
    two children is three members; nothing of this process's group is among them."""
    import os
    import subprocess
    import time

    from harness.process import group_stat

    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(group_stat(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = group_stat(proc.pid)
        assert len(members) == 3
        assert proc.pid in members
        assert all(fields[2] == str(proc.pid) for fields in members.values())
        assert os.getpid() not in members
        assert os.getpid() in group_stat(os.getpgid(0))
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
