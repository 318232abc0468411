"""Where one request's time goes: a real server sampled by py-spy under a closed loop, the
response's own timings against the client's, and side-by-side A/B rounds, in one run.

    python -m bench.experiments.profile_request               # resnet50, 1 and 4 clients
    python -m bench.experiments.profile_request --ref HEAD~1  # + the older app/ side by side
    python -m bench.experiments.profile_request --variant nice0:SERVING_MODEL_THREAD_NICENESS=0

One `python -m app` per variant (defaults, random weights; `head` is this checkout's app/,
`--ref` an older commit's app/ extracted with git archive, `--variant` this app/ with other
settings), all started before any load. Then:

1. Profiles: at each client count the `head` server runs the same 61 KB JPEG closed loop as
   bench/lib/load.py for `--seconds` under `py-spy record` (every thread, idle ones too,
   Python frames only, not pausing the process). Written to bench/results/:
   `<prefix>_c<N>.txt` (collapsed stacks: speedscope opens it as it is) and `<prefix>_c<N>.svg`
   (a flame graph, bench/experiments/flamegraph.py). The summary turns samples into
   milliseconds per request, per thread: the model thread inside OpenVINO's `infer`, the event
   loop, the decode pool, FastAPI's worker threads; waiting is told apart from work by the
   innermost frame.
2. Rounds: the variants and `model` (the same engine in this process, batch 1, one forward
   pass after another on a thread with the server's model-thread niceness) take turns at each
   client count, order rotated every round, so a shared machine's changing load falls on all
   alike; turns are pooled per variant. Each answered request gives its client latency and
   the server's `timing_ms` (decode, queue, inference, total): `outside` = client - total
   (transport, uvicorn before and after the app, the client), `server_other` = total - decode
   - queue - inference (routing, dependencies, hand-offs, top-k, the response model), and
   `overhead` = both: all that is neither decoding, queueing nor the model.

Everything lands in bench/results/<prefix>.json, with the load average at each turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.experiments.flamegraph import build_tree, parse_collapsed, render_svg
from bench.lib.images import small_jpeg
from bench.lib.load import percentile
from bench.lib.machine import machine_info
from bench.lib.results import RESULTS, command_line, write_result
from bench.lib.servers import process_cpu_s
from harness.process import ROOT, ManagedProcess, app_process

PY_SPY = Path(sys.executable).with_name("py-spy")
RATE_HZ = 100
STAGES = ("client", "total", "decode", "queue", "inference", "server_other", "outside", "overhead")

# Innermost frames of a thread that is waiting, not working (py-spy --idle records both).
# uvloop's loop is C: an event loop with no Python frame below Runner.run sits in epoll (or in
# uvloop's own C code, httptools' parsing included, which Python sampling cannot see).
WAITING = ("Runner.run ", "_worker ", "Condition.wait ", "Event.wait ", "Thread.run ",
           "Thread._bootstrap", "select ", "wait ")  # fmt: skip
MODEL_FORWARD = "InferRequest.infer "


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str]
    app_dir: Path | None = None  # None: this checkout


@dataclass
class Turn:
    """One closed loop's answers: client latency and the server's timing_ms, both in ms."""

    rows: list[dict[str, float]] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0


def server_env(model: str, extra: dict[str, str]) -> dict[str, str]:
    return {"SERVING_MODEL_NAME": model, "SERVING_MODEL_WEIGHTS": "random",
            "SERVING_DEVICE": "cpu", **extra}  # fmt: skip


def server_for(variant: Variant, model: str, log_dir: Path) -> ManagedProcess:
    server = app_process(server_env(model, variant.env), log_path=log_dir / f"{variant.name}.log")
    if variant.app_dir is not None:  # `python -m app` imports app/ from its working directory
        server.command = ["env", "-C", str(variant.app_dir), *server.command]
    return server


@contextmanager
def app_at(ref: str) -> Iterator[Path]:
    """app/ as it was at `ref`, in a temporary directory (git archive: no worktree to clean)."""
    with tempfile.TemporaryDirectory(prefix="profile-ref-") as tmp:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ref, "app"], cwd=ROOT, check=True,
            capture_output=True,
        ).stdout  # fmt: skip
        tar_path = Path(tmp) / "app.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def split(client_ms: float, timing: dict[str, Any]) -> dict[str, float]:
    """One answer's stages, in ms (see the module docstring)."""
    total = float(timing["total"])
    decode, queue, inference = (float(timing[k]) for k in ("decode", "queue", "inference"))
    return {
        "client": client_ms, "total": total, "decode": decode, "queue": queue,
        "inference": inference, "server_other": total - decode - queue - inference,
        "outside": client_ms - total, "overhead": client_ms - decode - queue - inference,
    }  # fmt: skip


async def closed_loop(url: str, body: bytes, clients: int, seconds: float, pid: int) -> Turn:
    """`clients` clients, each sending the next request when the last is answered; 0.5 s of
    warm-up (connections opened) not counted, then `seconds` counted."""
    turn = Turn(seconds=seconds)
    headers = {"content-type": "image/jpeg"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        start = time.perf_counter()
        measure_from, stop_at = start + 0.5, start + 0.5 + seconds
        cpu_from: list[float] = []

        async def one() -> None:
            while (sent := time.perf_counter()) < stop_at:
                if sent >= measure_from and not cpu_from:
                    cpu_from.append(process_cpu_s(pid))
                response = await client.post(url, content=body, headers=headers)
                done = time.perf_counter()
                if sent < measure_from or done > stop_at:
                    continue
                if response.status_code != 200:
                    turn.failed += 1
                    continue
                turn.rows.append(split((done - sent) * 1000.0, response.json()["timing_ms"]))

        await asyncio.gather(*(one() for _ in range(clients)))
        turn.server_cpu_s = process_cpu_s(pid) - (cpu_from[0] if cpu_from else 0.0)
    return turn


class InProcessModel:
    """The server's engine in this process: what one batch-1 forward pass costs right now."""

    def __init__(self, model: str, niceness: int) -> None:
        from app.model.cpu import lower_thread_priority
        from app.model.options import BackendChoice, DeviceChoice, Precision
        from app.model.runtime import ModelRuntime
        from app.model.weights import load_model, resolve_weights

        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._thread.submit(lower_thread_priority, niceness).result()
        source = resolve_weights(model, "random", allow_download=False)
        self.runtime = self._thread.submit(
            lambda: ModelRuntime(
                load_model(source),
                num_threads=0,
                device=DeviceChoice.CPU,
                precision=Precision.AUTO,
                backend=BackendChoice.AUTO,
            )
        ).result()
        self._image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        self._thread.submit(self.runtime.warm_up, [1], 224).result()

    def turn(self, seconds: float) -> Turn:
        turn = Turn(seconds=seconds)
        stop_at = time.perf_counter() + seconds
        while (started := time.perf_counter()) < stop_at:
            self._thread.submit(self.runtime.infer, self._image).result()
            turn.rows.append({"inference": (time.perf_counter() - started) * 1000.0})
        return turn


def summarise(turns: list[Turn]) -> dict[str, Any]:
    rows = [row for t in turns for row in t.rows]
    seconds = sum(t.seconds for t in turns)
    out: dict[str, Any] = {
        "requests": len(rows),
        "failed": sum(t.failed for t in turns),
        "throughput_rps": round(len(rows) / seconds, 2) if seconds else 0.0,
    }
    for stage in STAGES:
        values = sorted(r[stage] for r in rows if stage in r)
        if values:
            out[stage] = {"p50": round(percentile(values, 50), 2),
                          "mean": round(statistics.fmean(values), 2),
                          "p95": round(percentile(values, 95), 2)}  # fmt: skip
    cpu = sum(t.server_cpu_s for t in turns)
    if cpu and rows:
        out["server_cpu_ms_per_request"] = round(cpu * 1000.0 / len(rows), 2)
    return out


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def thread_role(name: str) -> str:
    """`thread (1234): decode_0` -> `decode`; the event loop is MainThread."""
    label = name.split(": ", 1)[-1]
    if label == "MainThread":
        return "event loop"
    if label.startswith("AnyIO worker"):
        return "anyio worker"
    return label.rstrip("0123456789").rstrip("_") or label


def profile_summary(stacks: list[tuple[list[str], int]], requests: int) -> dict[str, Any]:
    """Per thread role: samples, what was work (ms per request), the model's forward pass, and
    the heaviest working frames (innermost app/ or library frame, self samples)."""
    per_ms = 1000.0 / RATE_HZ / max(requests, 1)
    roles: dict[str, dict[str, Any]] = {}
    for frames, count in stacks:
        role = roles.setdefault(thread_role(frames[0]),
                                {"threads": set(), "samples": 0, "working": 0, "forward": 0,
                                 "top": {}})  # fmt: skip
        role["threads"].add(frames[0])
        role["samples"] += count
        leaf = frames[-1] if len(frames) > 1 else ""
        if any(leaf.startswith(w) for w in WAITING):
            continue
        role["working"] += count
        if any(f.startswith(MODEL_FORWARD) for f in frames):
            role["forward"] += count
        role["top"][leaf] = role["top"].get(leaf, 0) + count
    out = {}
    for name, role in sorted(roles.items(), key=lambda kv: -kv[1]["working"]):
        top = sorted(role["top"].items(), key=lambda kv: -kv[1])[:8]
        out[name] = {
            "threads": len(role["threads"]),
            "samples": role["samples"],
            "working_ms_per_request": round(role["working"] * per_ms, 2),
            "model_forward_ms_per_request": round(role["forward"] * per_ms, 2),
            "top_working_frames": {k: round(v * per_ms, 3) for k, v in top},
        }
    return out


def profile_level(server: ManagedProcess, body: bytes, clients: int, seconds: float,
                  prefix: str) -> dict[str, Any]:  # fmt: skip
    raw = RESULTS / f"{prefix}_c{clients}.txt"
    spy = subprocess.Popen(
        [str(PY_SPY), "record", "--pid", str(server.pid), "--threads", "--idle",
         "--nonblocking", "--rate", str(RATE_HZ), "--duration", str(int(seconds + 1)),
         "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)  # attached before the counted window
    turn = asyncio.run(
        closed_loop(f"{server.base_url}/predict", body, clients, seconds, server.pid)
    )
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    stacks = parse_collapsed(raw.read_text().splitlines())
    title = f"python -m app under {clients} client(s), {seconds:.0f} s, py-spy --idle"
    svg = raw.with_suffix(".svg")
    svg.write_text(render_svg(build_tree(stacks), title))
    # py-spy sampled ~1 s longer than the counted window: scale its samples to the window.
    sampled_s = sum(c for f, c in stacks if thread_role(f[0]) == "event loop") / RATE_HZ
    requests = round(len(turn.rows) * sampled_s / seconds) if sampled_s else len(turn.rows)
    return {
        "clients": clients,
        "load": summarise([turn]),
        "files": [shown(raw), shown(svg)],
        "sampled_s": round(sampled_s, 1),
        "threads": profile_summary(stacks, requests),
    }


def rounds(servers: dict[str, ManagedProcess], model: InProcessModel | None, body: bytes,
           levels: list[int], n_rounds: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    names = [*servers, *(["model"] if model else [])]
    turns: dict[tuple[str, int], list[Turn]] = {}
    loads = []
    for r in range(n_rounds):
        for clients in levels:
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if name == "model":
                    if clients != 1:
                        continue
                    assert model is not None
                    turn = model.turn(seconds)
                else:
                    server = servers[name]
                    turn = asyncio.run(closed_loop(f"{server.base_url}/predict", body, clients,
                                                   seconds, server.pid))  # fmt: skip
                turns.setdefault((name, clients), []).append(turn)
                loads.append(round(os.getloadavg()[0], 2))
        print(f"round {r + 1}/{n_rounds} done, load {loads[-1]}", flush=True)
    out: dict[str, Any] = {"load_average_1m": loads}
    for clients in levels:
        level = {name: summarise(turns[(name, clients)]) for name in names
                 if (name, clients) in turns}  # fmt: skip
        ref = level[names[0]]
        for name, s in level.items():
            if name != names[0] and "client" in s:
                s["p50_ratio_to_" + names[0]] = round(s["client"]["p50"] / ref["client"]["p50"], 3)
                s["throughput_ratio_to_" + names[0]] = round(
                    s["throughput_rps"] / ref["throughput_rps"], 3
                )
        out[f"c{clients}"] = level
    return out


def parse_variant(text: str) -> Variant:
    """`name:KEY=VALUE,KEY=VALUE` -> a variant of this checkout with those settings."""
    name, _, settings = text.partition(":")
    env = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
    return Variant(name, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--levels", default="1,4")
    parser.add_argument("--seconds", type=float, default=30.0, help="per profiled level")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--round-seconds", type=float, default=5.0)
    parser.add_argument("--ref", help="also serve app/ as of this commit, side by side")
    parser.add_argument("--variant", action="append", default=[], type=parse_variant)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--prefix", default="profile")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    body = small_jpeg()
    started_load = os.getloadavg()
    from app.settings.config import Settings

    niceness = Settings.model_fields["model_thread_niceness"].default
    with ExitStack() as stack:
        variants = [Variant("head", {})]
        if args.ref:
            variants.append(Variant(f"ref {args.ref}", {}, stack.enter_context(app_at(args.ref))))
        variants += args.variant
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="profile-")))
        servers = {v.name: stack.enter_context(server_for(v, args.model, log_dir))
                   for v in variants}  # fmt: skip
        for server in servers.values():
            server.wait_ready(timeout_s=600)
        model = InProcessModel(args.model, niceness)
        print(f"{len(servers)} server(s) ready, load {os.getloadavg()[0]:.2f}", flush=True)
        profiles = [] if args.no_profile else [
            profile_level(servers["head"], body, c, args.seconds, args.prefix) for c in levels
        ]  # fmt: skip
        ab = rounds(servers, model, body, levels, args.rounds, args.round_seconds)
    result = {
        "machine": machine_info(),
        "load_average_at_start": [round(x, 2) for x in started_load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "model": args.model,
        "variants": {v.name: v.env for v in variants},
        "in_process_model_niceness": niceness,
        "profiles": profiles,
        "rounds": ab,
        "command": command_line("bench.experiments.profile_request", argv),
    }
    out = RESULTS / f"{args.prefix}.json"
    write_result(out, result)
    print(json.dumps({k: result[k] for k in ("profiles", "rounds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
