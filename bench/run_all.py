"""One command for the whole performance picture, measured in one run on one machine:

1. in-process ceilings of each backend (no HTTP): the model alone, and the whole pipeline
   (decode + preprocess + model) for the end-to-end ceiling;
2. decode + preprocess cost (small photo, 12 MP photo, with and without draft decoding);
3. a closed-loop concurrency sweep against the plain per-request baseline server, our server
   in each configuration (the defaults first: OpenVINO on a CPU) and TorchServe 0.12 as a peer
   (when bench/torchserve/setup.sh has installed it; skipped with a message otherwise), with
   each server's start-up time to ready;
4. the targets of docs/PERFORMANCE.md evaluated in this run (absolute figures and ratios);
5. JSON results and a PNG plot in bench/results/, and docs/PERFORMANCE.md's generated tables
   rewritten from them (when --out is bench/results/, the default).

    python -m bench.run_all                      # the full run (about 20 minutes)
    python -m bench.run_all --quick              # a smoke run (about two minutes)
    python -m bench.run_all --compile            # also the torch.compile configuration
    python -m bench.run_all --peers              # side by side only: baseline, defaults,
                                                 # TorchServe, all up at once, client counts
                                                 # interleaved (run_all-peers.json, ~15 min)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from app.model.cpu import (
    available_cpus,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_model_name,
    default_torch_threads,
)
from bench import ceiling, preprocess_bench
from bench import report as report_doc
from bench.images import small_jpeg
from bench.loadgen import run_load
from bench.plot import plot_sweep
from bench.torchserve import server as torchserve
from harness.process import ROOT, ManagedProcess, app_process, free_port, group_stat

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class ServerConfig:
    name: str
    kind: str  # "baseline", "serving" or "torchserve"
    env: dict[str, str] = field(default_factory=dict)  # for the baseline: {"device": ...}
    backend: str | None = None  # the in-process ceiling this configuration is judged against
    torchserve: torchserve.TorchServeSettings | None = None

    @property
    def predict_path(self) -> str:
        if self.kind == "torchserve":
            return torchserve.TorchServeProcess.predict_path
        return "/predict"


def machine_info() -> dict[str, Any]:
    flags = cpu_flags()
    try:
        from app.model.backends.openvino_backend import import_openvino

        openvino: str | None = import_openvino().get_version()
    except ImportError:
        openvino = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model_name(),
        "cpus_available": available_cpus(),
        "bf16_native": cpu_has_native_bf16(flags),
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openvino": openvino,
        "torchserve": torchserve.installed_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def server_configs(
    model: str, *, with_compile: bool, with_cuda: bool, with_int8: bool = True
) -> list[ServerConfig]:
    base = {"SERVING_MODEL_NAME": model, "SERVING_MODEL_WEIGHTS": "random",
            "SERVING_LOG_LEVEL": "warning", "SERVING_DEVICE": "cpu"}  # fmt: skip
    all_cpus = str(available_cpus())
    baseline = (
        ServerConfig(
            "baseline (plain FastAPI, fp32, per request, cuda)", "baseline", {"device": "cuda"}
        )
        if with_cuda
        else ServerConfig("baseline (plain FastAPI, fp32, per request)", "baseline")
    )
    native = cpu_has_native_bf16()
    fast = "bf16" if native else "fp32"  # what SERVING_PRECISION=auto picks on this CPU
    configs = [
        baseline,
        # The defaults as shipped: SERVING_BACKEND=auto (OpenVINO on a CPU), precision auto.
        ServerConfig(f"serving defaults (OpenVINO {fast})", "serving", base, f"openvino-{fast}"),
    ]
    if native:
        configs.append(
            ServerConfig(
                "serving OpenVINO fp32",
                "serving",
                {**base, "SERVING_PRECISION": "fp32"},
                "openvino-fp32",
            )
        )
    if with_int8:
        configs.append(
            ServerConfig(
                "serving OpenVINO int8",
                "serving",
                {**base, "SERVING_PRECISION": "int8"},
                "openvino-int8",
            )
        )
    # The thread defaults under test: the model at the same priority as HTTP, and one CPU
    # fewer for the model (docs/PERFORMANCE.md, "Threads").
    configs.append(
        ServerConfig(
            "serving defaults, model at HTTP's priority",
            "serving",
            {**base, "SERVING_MODEL_THREAD_NICENESS": "0"},
            f"openvino-{fast}",
        )
    )
    if int(all_cpus) > 1:
        fewer = str(int(all_cpus) - 1)
        configs.append(
            ServerConfig(
                f"serving defaults, {fewer} inference thread(s)",
                "serving",
                {**base, "SERVING_NUM_THREADS": fewer},
                f"openvino-{fast}",
            )
        )
    torch_env = {**base, "SERVING_BACKEND": "torch", "SERVING_PRECISION": fast}
    configs.append(ServerConfig(f"serving torch {fast}", "serving", torch_env, f"torch-{fast}"))
    if with_compile:
        configs.append(
            ServerConfig(
                f"serving torch {fast} compiled",
                "serving",
                {**torch_env, "SERVING_COMPILE": "true"},
                f"torch-{fast}-compiled",
            )
        )
    if with_cuda:
        configs.append(
            ServerConfig(
                "serving cuda bf16",
                "serving",
                {
                    **base,
                    "SERVING_DEVICE": "cuda",
                    "SERVING_PRECISION": "bf16",
                    "SERVING_MAX_BATCH_SIZE": "32",
                    "SERVING_MAX_QUEUE_SIZE": "256",
                },
                "cuda-bf16",
            )
        )
    return configs


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


Server = ManagedProcess | torchserve.TorchServeProcess


def make_server(config: ServerConfig, model: str, log_dir: Path) -> Server:
    """The server, not started yet: what it needs before it starts (TorchServe's archive) is
    done here, outside the start-up time measured."""
    slug = config.name.split(" (")[0].replace(" ", "-").replace(",", "").replace("/", "")
    log_path = log_dir / f"{slug}.log"
    if config.kind == "torchserve":
        assert config.torchserve is not None
        return torchserve.TorchServeProcess(config.torchserve, log_dir / slug, log_path)
    if config.kind == "baseline":
        port = free_port()
        command = [sys.executable, "-m", "bench.baseline_server", "--port", str(port),
                   "--model", model, "--device", config.env.get("device", "cpu")]  # fmt: skip
        return ManagedProcess(command, env={}, log_path=log_path, port=port)
    # The gRPC listener (default 8001) on a free port too: two servers on one machine, ours or
    # another sweep's, would otherwise fight over it and the second would not start.
    return app_process({"SERVING_GRPC_PORT": str(free_port()), **config.env}, log_path=log_path)


def start_and_wait(
    config: ServerConfig, model: str, log_dir: Path
) -> tuple[Server, dict[str, Any]]:
    """The server, started and ready, with its start-up time and resident memory."""
    server = make_server(config, model, log_dir)
    started = time.monotonic()
    server.start()
    try:
        server.wait_ready(timeout_s=900)
    except BaseException:
        server.terminate()
        raise
    # Process start to ready: imports, load, conversion, calibration, warm-up (TorchServe:
    # the JVM, then every worker READY).
    ready = {"ready_s": round(time.monotonic() - started, 1),
             "rss_ready_mb": round(server.rss_bytes() / 2**20, 1)}  # fmt: skip
    return server, ready


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


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the processes of a process group (a server and its
    workers)."""
    ticks = sum(int(f[11]) + int(f[12]) for f in group_stat(pgid).values())  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_idle(server: Server, *, busy_below: float = 0.2, timeout_s: float = 180.0) -> float:
    """Until the server uses less than `busy_below` of a CPU over a second: a server that does
    not drop abandoned requests (the baseline's thread pool, TorchServe's queue) keeps
    computing its backlog after the clients stop, on the CPUs the next point measures with.
    Returns the seconds waited."""
    started = time.monotonic()
    pgid = server.pid
    before = group_cpu_s(pgid)
    while time.monotonic() - started < timeout_s:
        time.sleep(1.0)
        after = group_cpu_s(pgid)
        if after - before < busy_below:
            break
        before = after
    return round(time.monotonic() - started, 1)


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


def _at(rows: list[dict[str, Any]], config: str, concurrency: int) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["config"] == config and r["concurrency"] == concurrency), None
    )


def _best_ceiling(ceilings: list[dict[str, Any]], backend: str | None, kind: str) -> float:
    rows = [r for r in ceilings if r["backend"] == backend and r.get("kind", "model") == kind]
    return max((r["images_per_s"] for r in rows), default=0.0)


def evaluate(
    configs: list[ServerConfig],
    e2e: list[dict[str, Any]],
    ceilings: list[dict[str, Any]],
) -> dict[str, Any]:
    """The targets of issue 11, judged on the configuration a user gets without setting
    anything (the first serving configuration: the defaults), measured in this run."""
    baseline = configs[0].name
    ours = [c for c in configs if c.kind == "serving"]
    judged = ours[0]
    measured = sorted({r["concurrency"] for r in e2e})
    level = 10 if 10 in measured else max(x for x in measured if x <= 10)
    best = max(
        ours,
        key=lambda c: (_at(e2e, c.name, level) or {"throughput_rps": 0})["throughput_rps"],
    )
    at10 = _at(e2e, judged.name, 10)
    at1 = _at(e2e, judged.name, 1)
    base10 = _at(e2e, baseline, 10)
    base1 = _at(e2e, baseline, 1)
    # The in-process end-to-end ceiling: decode + preprocess + model, no HTTP, same CPUs.
    pipeline = _best_ceiling(ceilings, judged.backend, "pipeline")
    model_only = _best_ceiling(ceilings, judged.backend, "model")
    batch1_rows = [
        r
        for r in ceilings
        if r["backend"] == judged.backend
        and r["batch_size"] == 1
        and r.get("kind", "model") == "model"
    ]
    batch1 = max(batch1_rows, key=lambda r: r["threads"]) if batch1_rows else None
    our_names = {c.name for c in ours}
    failures = {
        str(level): sum(
            r["failed"] for r in e2e if r["concurrency"] == level and r["config"] in our_names
        )
        for level in (10, 32, 64)
        if any(r["concurrency"] == level for r in e2e)
    }
    out: dict[str, Any] = {
        "judged_config": judged.name,
        "best_config": best.name,
        "failures_by_concurrency": failures,
        "ready_s": (at1 or at10 or {}).get("ready_s"),
    }
    if at10:
        rps = at10["throughput_rps"]
        out["rps_at_10"] = {"value": rps, "target": 140.0, "met": rps >= 140.0}
        out["p95_ms_at_10"] = {"value": at10["p95_ms"], "aim": 100.0, "met": at10["p95_ms"] <= 100}
    if at1:
        out["p50_ms_at_1"] = {"value": at1["p50_ms"], "target": 15.0, "met": at1["p50_ms"] <= 15}
    if at10 and pipeline:
        ratio = at10["throughput_rps"] / pipeline
        out["throughput_vs_pipeline_ceiling_at_10"] = {
            "ratio": round(ratio, 3),
            "ceiling_img_s": pipeline,
            "target": 0.85,
            "met": ratio >= 0.85,
        }
    if at10 and model_only:
        out["throughput_vs_model_ceiling_at_10"] = {
            "ratio": round(at10["throughput_rps"] / model_only, 3),
            "ceiling_img_s": model_only,
        }
    if at10 and base10 and base10["throughput_rps"] > 0:
        ratio = at10["throughput_rps"] / base10["throughput_rps"]
        out["throughput_vs_baseline_at_10"] = {"ratio": round(ratio, 2), "target": 4.0,
                                               "met": ratio >= 4.0}  # fmt: skip
    if at1 and batch1:
        ratio = at1["p50_ms"] / batch1["median_batch_ms"]
        out["p50_at_1_vs_model_batch1"] = {
            "ratio": round(ratio, 3),
            "model_batch1_ms": batch1["median_batch_ms"],
        }
    if at1 and base1 and base1["p50_ms"] > 0:  # 0 when nothing was answered in the point
        # The same HTTP and decode work on both sides: what batching adds at one client.
        out["p50_at_1_vs_baseline_p50_at_1"] = {"ratio": round(at1["p50_ms"] / base1["p50_ms"], 3)}
    # TorchServe's best configuration at 10 clients in this run (issue 11 aims at 6x it).
    peers = [_at(e2e, c.name, 10) for c in configs if c.kind == "torchserve"]
    peer10 = max((p for p in peers if p), key=lambda p: p["throughput_rps"], default=None)
    if at10 and peer10 and peer10["throughput_rps"] > 0:
        ratio = at10["throughput_rps"] / peer10["throughput_rps"]
        out["throughput_vs_torchserve_at_10"] = {
            "ratio": round(ratio, 2),
            "torchserve_config": peer10["config"],
            "torchserve_rps": peer10["throughput_rps"],
            "target": 6.0,
            "met": ratio >= 6.0,
        }
    out["no_failures_at_10_32_64"] = all(v == 0 for v in failures.values())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--concurrency", default="1,4,10,32,64")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    parser.add_argument("--compile", action="store_true", help="add the compiled configuration")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words; keep only configurations whose name contains one "
        "(the baseline always runs), e.g. --only cuda",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="the side-by-side table only: the baseline, the defaults and TorchServe, all up at "
        "once, each client count against each in turn (results tagged 'peers' unless --tag)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short and small")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="suffix for result file names")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.concurrency = "1,4"
    if args.peers and not args.tag:
        args.tag = "peers"
    levels = [int(x) for x in args.concurrency.split(",")]
    with_cuda = torch.cuda.is_available()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.tag}" if args.tag else ""
    started = time.time()

    configs = server_configs(
        args.model, with_compile=args.compile, with_cuda=with_cuda, with_int8=not args.quick
    )
    if args.quick:  # the baseline, the defaults and torch: enough to see the tools work
        configs = [c for c in configs if c.kind == "baseline" or c is configs[1]
                   or c.name.startswith("serving torch")]  # fmt: skip
    elif args.peers:
        configs = configs[:2]  # the baseline and the defaults
    if not args.quick and not with_cuda:  # TorchServe runs on the CPU only (its handler)
        configs += torchserve_configs(args.model)
    if args.only:
        words = args.only.split(",")
        configs = [c for c in configs if c.kind == "baseline" or any(w in c.name for w in words)]
    backends = list(dict.fromkeys(c.backend for c in configs if c.backend))
    ceiling_rows: list[dict[str, Any]] = []
    thread_counts = sorted({available_cpus(), max(1, available_cpus() - 1)})
    for name in backends:
        on_gpu = name.startswith("cuda")
        for threads in [default_torch_threads(device_type="cuda")] if on_gpu else thread_counts:
            for result in ceiling.measure(
                args.model,
                ceiling.BACKENDS[name],
                [1, 8] if not name.startswith("cuda") else [1, 8, 32],
                seconds_per_point=1.0 if args.quick else 5.0,
                num_threads=threads,
                # The end-to-end ceiling, for the configuration judged (the defaults).
                pipeline=name == backends[0] and threads == max(thread_counts),
            ):
                ceiling_rows.append(asdict(result))
                print(json.dumps(ceiling_rows[-1]), flush=True)
    preprocess_rows = preprocess_bench.run(args.model, 0.5 if args.quick else 3.0)

    e2e: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        if args.peers:
            e2e = sweep_side_by_side(
                configs, args.model, levels, duration_s=args.duration, log_dir=Path(tmp)
            )
        for config in configs if not args.peers else []:
            e2e += sweep(config, args.model, levels, duration_s=args.duration, log_dir=Path(tmp))

    report = {
        "command": "python -m bench.run_all "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "model": args.model,
        "duration_s_per_point": args.duration,
        "ceiling": ceiling_rows,
        "preprocess": preprocess_rows,
        "e2e": e2e,
        "targets": evaluate(configs, e2e, ceiling_rows),
        "wall_s": round(time.time() - started, 1),
    }
    machine = report["machine"]
    json_path = args.out / f"run_all{suffix}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot_sweep(
        e2e,
        args.out / f"throughput_latency{suffix}.png",
        title=f"{args.model} on {machine['cpu']}, {machine['cpus_available']} CPUs",
    )
    print(json.dumps(report["targets"], indent=2))
    print(f"wrote {json_path}")
    if args.out.resolve() == RESULTS.resolve():
        # The recorded results changed: the document's generated tables follow in the same
        # command (what `python -m bench.report --write` does; a test holds them equal).
        report_doc.DOC.write_text(report_doc.rewrite(report_doc.DOC.read_text()))
        print(f"refreshed the generated tables of {report_doc.DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
