"""Start-up and idle memory: the model converted at start-up (torch imported, as the image did
before issue 22, and as the gpu image still does on a CPU) against the IR built with the image
(no torch in the process: the cpu image's way), on this machine, in turns.

Each round starts one server, then the other, never both at once: the seconds from the process's
start to its /ready answering 200, its RSS once ready (idle), and its RSS after a few requests
and a pause (idle after work: what a replica holds between bursts). The IR is built once first
(`python -m app.model.ir.build`, outside the timings); the IR server runs with torch blocked
(harness/without_torch.py), so it cannot lean on it.

    python -m bench.startup --model resnet50 --rounds 3 --json bench/results/startup.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.lib.images import small_jpeg
from bench.lib.results import command_line, write_result
from bench.lib.rounds import alternating
from bench.lib.servers import build_ir, serving_env
from harness.process import app_process, free_port

PATHS = ("converted", "ir")


def measure(path: str, model: str, ir: Path, work: Path, requests: int) -> dict[str, Any]:
    env = {**serving_env(model), "SERVING_GRPC_PORT": str(free_port())}
    if path == "ir":
        env["SERVING_MODEL_DIR"] = str(ir)
    server = app_process(env, log_path=work / f"{path}.log", without_torch=path == "ir")
    started = time.monotonic()
    with server:
        server.wait_ready(timeout_s=600)
        ready_s = time.monotonic() - started
        time.sleep(1.0)
        idle = server.rss_bytes()
        body = small_jpeg()
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            for _ in range(requests):
                answer = client.post("/predict", files={"file": ("x.jpg", body, "image/jpeg")})
                answer.raise_for_status()
            source = client.get("/ready").json()["model_source"]
        time.sleep(2.0)
        after = server.rss_bytes()
    return {
        "model_source": source,
        "ready_s": round(ready_s, 2),
        "idle_rss_mib": round(idle / 2**20, 1),
        "rss_after_requests_mib": round(after / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    rows: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_ir(args.model, work / "ir")
        # Alternating which goes first, so a trend in the machine's load favours neither.
        for path in alternating(PATHS, args.rounds):
            row = measure(path, args.model, work / "ir", work, args.requests)
            rows[path].append(row)
            print(f"{path}: {row}", flush=True)

    keys = ("ready_s", "idle_rss_mib", "rss_after_requests_mib")
    medians = {p: {k: statistics.median(r[k] for r in rows[p]) for k in keys} for p in PATHS}
    result = {
        "command": command_line("bench.startup", argv),
        "model": args.model,
        "weights": "random (the same computation as the real ones)",
        "rounds": rows,
        "median": medians,
        # ir over converted: below 1.0 = the IR starts faster / holds less.
        "ratios": {k: round(medians["ir"][k] / medians["converted"][k], 3) for k in keys},
    }
    print(result["median"], result["ratios"])
    if args.json:
        write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
