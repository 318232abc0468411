"""Peak memory of a real server under bursts of max-pixel images, one burst per format, and of
images as large on the wire as uploads may be.

A `python -m app` process (optionally inside a memory-limited cgroup, as in a pod) gets 64
concurrent uploads of the same 7000x7000 image (49 MP, just under SERVING_MAX_IMAGE_PIXELS),
format after format, then of a 9.8 MB JPEG (`jpeg noise 10mb`, just under
SERVING_MAX_UPLOAD_BYTES: the body memory budget's case). Recorded per burst: the status
codes, the process's peak RSS (VmHWM, reset before each burst through /proc/PID/clear_refs where
allowed; otherwise sampled), its growth over the baseline (RSS once ready), whether the kernel
OOM-killed it, and a normal request after.

    python -m bench.memory_burst --model resnet50 --limit-mib 1536 --json out.json
    python -m bench.memory_burst --model resnet18 --env SERVING_MAX_PIXELS_IN_FLIGHT=0
    python -m bench.memory_burst --model resnet50 --limit-mib 1280 --ir   # as the cpu image runs

`--ir` builds the model as the cpu image does (OpenVINO IR) and serves it with torch blocked.

The figures for the chart's memory limits (docs/DEPLOYMENT.md) come from this script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.lib.images import small_jpeg
from bench.lib.memory import PeakRss
from bench.lib.results import command_line, write_result
from bench.lib.servers import build_ir, serving_env
from harness.big_images import BURST_IMAGES, IMAGES, WIRE_IMAGES
from harness.burst import burst
from harness.cgroup import MemoryCgroup
from harness.process import ManagedProcess, app_command, free_port

MIB = 1 << 20


def image_bytes(name: str) -> bytes:
    return WIRE_IMAGES[name]() if name in WIRE_IMAGES else IMAGES[name][2]()


def metric(base_url: str, name: str) -> float | None:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = serving_env(args.model, **dict(item.split("=", 1) for item in args.env))
    work = Path(tempfile.mkdtemp(prefix="memory_burst-"))
    if args.ir:
        env["SERVING_MODEL_DIR"] = str(build_ir(args.model, work / "ir"))
    port = free_port()
    env |= {"SERVING_HOST": "127.0.0.1", "SERVING_PORT": str(port),
            "SERVING_GRPC_PORT": str(free_port())}  # fmt: skip
    images = {name: image_bytes(name) for name in args.images}
    cgroup = MemoryCgroup(args.limit_mib * MIB) if args.limit_mib else None
    log_path = Path(args.log)
    result: dict[str, Any] = {"bursts": []}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        command = app_command(without_torch=args.ir)
        if cgroup is not None:
            stack.enter_context(cgroup)
            command = cgroup.wrap(command)
        server = stack.enter_context(ManagedProcess(command, env=env, log_path=log_path, port=port))
        server.wait_ready()
        time.sleep(1.0)
        baseline = server.rss_bytes()
        result |= {
            "baseline_rss_bytes": baseline,
            "budget_bytes": metric(server.base_url, "decode_memory_budget_bytes"),
            "body_budget_bytes": metric(server.base_url, "body_memory_budget_bytes"),
        }
        peak = PeakRss(server.pid)
        for name, data in images.items():
            with peak.measuring():
                statuses = asyncio.run(burst(server.base_url, data, args.concurrency, args.timeout))
            alive = server.proc is not None and server.proc.poll() is None
            after = None
            if alive:
                with httpx.Client(base_url=server.base_url, timeout=30) as client:
                    after = client.post(
                        "/predict", content=small_jpeg(), headers={"content-type": "image/jpeg"}
                    ).status_code
            row = {
                "image": name,
                "bytes": len(data),
                "statuses": dict(statuses),
                "peak_rss_bytes": peak.peak() if alive else None,
                "peak_growth_bytes": peak.peak() - baseline if alive else None,
                "alive": alive,
                "oom_kills": cgroup.oom_kills() if cgroup is not None else None,
                "normal_request_after": after,
            }
            print(json.dumps(row), flush=True)
            result["bursts"].append(row)
            if not alive:
                break
        result["cgroup_peak_bytes"] = cgroup.peak_bytes() if cgroup is not None else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--limit-mib", type=int, default=0, help="run in a cgroup this size")
    parser.add_argument("--images", nargs="*", default=[*BURST_IMAGES, *WIRE_IMAGES])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=10.0, help="X-Request-Timeout")
    parser.add_argument("--env", nargs="*", default=[], help="more SERVING_X=value settings")
    parser.add_argument("--ir", action="store_true", help="serve a build-time IR, no torch")
    parser.add_argument(
        "--log", default=str(Path(tempfile.gettempdir()) / "memory_burst-server.log")
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = {
        "benchmark": "memory_burst",
        "command": command_line("bench.memory_burst", argv),
        "model": args.model,
        "limit_mib": args.limit_mib or None,
        "concurrency": args.concurrency,
        "env": args.env,
        "model_source": "ir" if args.ir else "converted",
        **run(args),
    }
    if args.json:
        write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
