"""Closed-loop sweeps of client counts against servers, and the configurations
`python -m bench.run_all` sweeps: the plain baseline, our server as shipped and with the
alternatives a user may set, and TorchServe 0.12 as a peer where it is installed.

One row per (configuration, client count): the load generator's result, the server's start-up
time and memory when ready, and the machine's load average after the point."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.model.cpu import available_cpus, cpu_has_native_bf16
from bench.lib.images import small_jpeg
from bench.lib.load import run_load
from bench.lib.servers import (
    Server,
    ServerConfig,
    serving_env,
    start_and_wait,
    wait_until_idle,
)
from bench.torchserve import server as torchserve


def server_configs(
    model: str, *, with_compile: bool, with_cuda: bool, with_int8: bool = True
) -> list[ServerConfig]:
    """The plain baseline, then our server: the defaults first (the configuration judged), then
    the alternatives a user may set, each with the in-process ceiling it is judged against."""
    cpus = available_cpus()
    native = cpu_has_native_bf16()
    fast = "bf16" if native else "fp32"  # what SERVING_PRECISION=auto picks on this CPU
    torch_env = {"SERVING_BACKEND": "torch", "SERVING_PRECISION": fast}
    cuda_env = {"SERVING_DEVICE": "cuda", "SERVING_PRECISION": "bf16",
                "SERVING_MAX_BATCH_SIZE": "32", "SERVING_MAX_QUEUE_SIZE": "256"}  # fmt: skip
    # (name, settings over the defaults, ceiling judged against, measured in this run)
    variants = [
        # The defaults as shipped: SERVING_BACKEND=auto (OpenVINO on a CPU), precision auto.
        (f"serving defaults (OpenVINO {fast})", {}, f"openvino-{fast}", True),
        ("serving OpenVINO fp32", {"SERVING_PRECISION": "fp32"}, "openvino-fp32", native),
        ("serving OpenVINO int8", {"SERVING_PRECISION": "int8"}, "openvino-int8", with_int8),
        # The thread defaults under test: the model at the same priority as HTTP, and one CPU
        # fewer for the model (docs/PERFORMANCE.md, "Threads").
        ("serving defaults, model at HTTP's priority", {"SERVING_MODEL_THREAD_NICENESS": "0"},
         f"openvino-{fast}", True),
        (f"serving defaults, {cpus - 1} inference thread(s)",
         {"SERVING_NUM_THREADS": str(cpus - 1)}, f"openvino-{fast}", cpus > 1),
        (f"serving torch {fast}", torch_env, f"torch-{fast}", True),
        (f"serving torch {fast} compiled", {**torch_env, "SERVING_COMPILE": "true"},
         f"torch-{fast}-compiled", with_compile),
        ("serving cuda bf16", cuda_env, "cuda-bf16", with_cuda),
    ]  # fmt: skip
    baseline = (
        ServerConfig(
            "baseline (plain FastAPI, fp32, per request, cuda)", "baseline", {"device": "cuda"}
        )
        if with_cuda
        else ServerConfig("baseline (plain FastAPI, fp32, per request)", "baseline")
    )
    base = serving_env(model, SERVING_DEVICE="cpu")
    return [baseline] + [
        ServerConfig(name, "serving", {**base, **env}, backend)
        for name, env, backend, measured in variants
        if measured
    ]


def torchserve_configs(model: str) -> list[ServerConfig]:
    """TorchServe 0.12 as a peer, fp32 eager with our handler (bench/torchserve/handler.py).
    One worker per CPU with one OpenMP thread each was its best on a 2-vCPU Xeon (architecture
    notes); one worker with every CPU, and TorchServe's own batching, are the alternatives a
    TorchServe user would try. Empty, with the reason printed, when it cannot run here."""
    reason = torchserve.missing_reason()
    if reason is None and model != torchserve.MODEL:
        reason = f"its handler serves {torchserve.MODEL} only, not {model}"
    if reason is not None:
        print(f"skipping TorchServe: {reason}", flush=True)
        return []
    cpus = available_cpus()
    variants = [
        (f"{cpus} workers x 1 thread", torchserve.TorchServeSettings(workers=cpus)),
        (f"{cpus} workers x 1 thread, batch 8 / 10 ms",
         torchserve.TorchServeSettings(workers=cpus, batch_size=8, max_batch_delay_ms=10)),
    ]  # fmt: skip
    if cpus > 1:
        variants.append(
            (f"1 worker x {cpus} threads",
             torchserve.TorchServeSettings(workers=1, threads_per_worker=cpus))
        )  # fmt: skip
    return [
        ServerConfig(f"TorchServe 0.12, {label}", "torchserve", torchserve=settings)
        for label, settings in variants
    ]


def choose_configs(
    model: str, *, quick: bool, peers: bool, only: str, with_compile: bool, with_cuda: bool
) -> list[ServerConfig]:
    """What one run_all sweeps: every configuration (`quick`: the baseline, the defaults and
    torch; `peers`: the baseline and the defaults), TorchServe on a CPU unless `quick`, and of
    those only the names holding one of `only`'s comma-separated words (the baseline always)."""
    configs = server_configs(
        model, with_compile=with_compile, with_cuda=with_cuda, with_int8=not quick
    )
    if quick:  # the baseline, the defaults and torch: enough to see the tools work
        configs = [c for c in configs if c.kind == "baseline" or c is configs[1]
                   or c.name.startswith("serving torch")]  # fmt: skip
    elif peers:
        configs = configs[:2]  # the baseline and the defaults
    if not quick and not with_cuda:  # TorchServe runs on the CPU only (its handler)
        configs += torchserve_configs(model)
    if only:
        words = only.split(",")
        configs = [c for c in configs if c.kind == "baseline" or any(w in c.name for w in words)]
    return configs


def measure_point(
    config: ServerConfig, server: Server, ready: dict[str, Any], level: int, duration_s: float
) -> dict[str, Any]:
    result = asyncio.run(
        run_load(
            f"{server.base_url}{config.predict_path}",
            small_jpeg(),
            content_type="image/jpeg",
            concurrency=level,
            duration_s=duration_s,
            warmup_s=min(3.0, duration_s / 4),
        )
    )
    # The machine's 1-minute load average after the point: shared machines are noisy,
    # and this says how noisy (2 CPUs at a load of 8 run everything ~4x slower).
    row = {"config": config.name, **ready, "load_1m": round(os.getloadavg()[0], 1),
           **asdict(result)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def sweep(
    config: ServerConfig,
    model: str,
    levels: list[int],
    *,
    duration_s: float,
    log_dir: Path,
) -> list[dict[str, Any]]:
    """One server at a time, every client count in turn."""
    server, ready = start_and_wait(config, model, log_dir)
    try:
        return [measure_point(config, server, ready, level, duration_s) for level in levels]
    finally:
        server.terminate()


def sweep_side_by_side(
    configs: list[ServerConfig],
    model: str,
    levels: list[int],
    *,
    duration_s: float,
    log_dir: Path,
) -> list[dict[str, Any]]:
    """Every server up at once (started one after the other, each timed alone), then each
    client count against each server in turn, the order rotated from one count to the next: on
    a shared machine whose background load changes by the minute, the servers compared at one
    client count are measured minutes apart at most, not a quarter of an hour."""
    servers: list[tuple[ServerConfig, Server, dict[str, Any]]] = []
    rows: list[dict[str, Any]] = []
    try:
        for config in configs:
            server, ready = start_and_wait(config, model, log_dir)
            servers.append((config, server, ready))
        for i, level in enumerate(levels):
            shift = i % len(servers)
            for config, server, ready in servers[shift:] + servers[:shift]:
                rows.append(measure_point(config, server, ready, level, duration_s))
                rows[-1]["drain_s"] = wait_until_idle(server)
    finally:
        for _, server, _ in servers:
            server.terminate()
    order = {c.name: i for i, c in enumerate(configs)}
    return sorted(rows, key=lambda r: (order[r["config"]], r["concurrency"]))
