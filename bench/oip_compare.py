"""The Open Inference Protocol next to /predict, on one real server, in one run.

One `python -m app` with the defaults (OpenVINO, precision auto; random weights), the same
61 KB JPEG, the same closed loop at each client count, through four variants:

- `/predict`: the raw JPEG as the body (what every other benchmark sends);
- `/v2 binary`: POST /v2/models/{model}/infer with Triton's binary tensor data extension,
  the body tritonclient.http makes (BYTES, class_count);
- `/v2 JSON`: the same route in plain JSON, the image base64-encoded;
- `gRPC`: ModelInfer on SERVING_GRPC_PORT, the image in raw_input_contents.

The variants take turns in short rounds at each client count (the order rotated every round), so
a shared machine's changing background load falls on all of them alike; each variant's rounds
are pooled. Recorded per variant and client count: throughput, latency percentiles, the server's
CPU time per request (user + system, all threads) and this process's, and the ratios to
/predict; the machine's CPU and load average. Before the load, one request per variant must give
the same top-1 as /predict, read by tritonclient's own parsers.

    python -m bench.oip_compare                       # resnet50, 1/4/10 clients (~6 min)
    python -m bench.oip_compare --model resnet18 --levels 1,4 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import httpx

from app.oip.grpc import grpc_predict_v2_pb2 as pb
from bench import oip_bodies
from bench.lib.images import small_jpeg
from bench.lib.load import summarise
from bench.lib.results import RESULTS, command_line, write_result
from bench.lib.servers import Server, ServerConfig, serving_env, start_and_wait
from bench.oip_load import MODEL_INFER, Send, Window, closed_loop, grpc_senders, http_senders
from harness.process import free_port


@dataclass(frozen=True)
class Variant:
    """One way to ask the server for the same answer."""

    key: str
    label: str
    transport: Literal["http", "grpc"]
    body: bytes
    url_path: str = ""
    headers: tuple[tuple[str, str], ...] = ()


def request_variants(model: str, image: bytes, class_count: int) -> list[Variant]:
    """The four variants, /predict first (the reference of every ratio)."""
    binary = oip_bodies.binary_body(image, class_count)
    plain = oip_bodies.json_body(image, class_count)
    infer = f"/v2/models/{model}/infer"
    grpc_body = oip_bodies.grpc_request(model, image, class_count)
    jpeg = (("content-type", "image/jpeg"),)
    return [
        Variant("predict", "/predict, raw JPEG", "http", image, "/predict", jpeg),
        Variant("v2-binary", "/v2 infer, binary extension", "http", binary.body, infer,
                tuple(binary.headers.items())),
        Variant("v2-json", "/v2 infer, JSON + base64", "http", plain.body, infer,
                tuple(plain.headers.items())),
        Variant("grpc", "gRPC ModelInfer", "grpc", grpc_body),
    ]  # fmt: skip


@dataclass(frozen=True)
class Target:
    base_url: str
    grpc_target: str
    pid: int


@asynccontextmanager
async def senders(variant: Variant, target: Target, clients: int) -> AsyncIterator[list[Send]]:
    if variant.transport == "grpc":
        async with grpc_senders(target.grpc_target, variant.body, clients) as out:
            yield out
    else:
        url = target.base_url + variant.url_path
        async with http_senders(url, variant.body, dict(variant.headers), clients) as out:
            yield out


async def top1(variant: Variant, target: Target) -> int:
    """One request on this variant; the class it puts first."""
    if variant.transport == "grpc":
        async with grpc.aio.insecure_channel(target.grpc_target) as channel:
            answer: bytes = await channel.unary_unary(MODEL_INFER)(variant.body, timeout=60)
        return oip_bodies.grpc_top1(answer)
    async with httpx.AsyncClient(base_url=target.base_url, timeout=60) as client:
        response = await client.post(
            variant.url_path, content=variant.body, headers=dict(variant.headers)
        )
    if response.status_code != 200:
        raise RuntimeError(f"{variant.label}: HTTP {response.status_code}: {response.text[:500]}")
    if variant.key == "predict":
        return oip_bodies.predict_top1(response.content)
    header = response.headers.get(oip_bodies.INFERENCE_HEADER)
    return oip_bodies.rest_top1(response.content, header)


def rotated(variants: list[Variant], shift: int) -> list[Variant]:
    shift %= len(variants)
    return variants[shift:] + variants[:shift]


@dataclass
class Pool:
    """A variant's rounds at one client count, pooled."""

    windows: list[Window]
    load_1m: list[float]

    def row(self, variant: Variant, clients: int) -> dict[str, Any]:
        latencies = [x for w in self.windows for x in w.latencies_s]
        failures: Counter[str] = Counter()
        for w in self.windows:
            failures.update(w.failures)
        seconds = sum(w.duration_s for w in self.windows)
        result = summarise(clients, seconds, latencies, failures)
        ok = max(result.ok, 1)
        return {
            "variant": variant.key,
            "label": variant.label,
            "request_bytes": len(variant.body),
            **asdict(result),
            "server_cpu_ms_per_request": round(
                1000 * sum(w.server_cpu_s for w in self.windows) / ok, 2
            ),
            "client_cpu_ms_per_request": round(
                1000 * sum(w.client_cpu_s for w in self.windows) / ok, 2
            ),
            "round_rps": [round(len(w.latencies_s) / w.duration_s, 2) for w in self.windows],
            "load_1m": self.load_1m,
        }


async def measure(
    variants: list[Variant],
    target: Target,
    levels: list[int],
    *,
    rounds: int,
    round_s: float,
    warmup_s: float,
) -> list[dict[str, Any]]:
    rows = []
    for i, clients in enumerate(levels):
        pools = {p.key: Pool([], []) for p in variants}
        for r in range(rounds):
            for variant in rotated(variants, i + r):
                async with senders(variant, target, clients) as group:
                    window = await closed_loop(
                        group, duration_s=round_s, warmup_s=warmup_s, server_pid=target.pid
                    )
                pools[variant.key].windows.append(window)
                pools[variant.key].load_1m.append(round(os.getloadavg()[0], 1))
                print(f"{clients:>3} clients, round {r + 1}/{rounds}, {variant.label}: "
                      f"{len(window.latencies_s) / round_s:.1f} rps", flush=True)  # fmt: skip
        level_rows = [pools[p.key].row(p, clients) for p in variants]
        with_ratios(level_rows)
        for row in level_rows:
            print(json.dumps({k: v for k, v in row.items() if k != "round_rps"}), flush=True)
        rows += level_rows
    return rows


def with_ratios(level_rows: list[dict[str, Any]]) -> None:
    """Each row's throughput, p50 and server CPU per request over /predict's (the first row),
    at the same client count."""
    reference = level_rows[0]
    for row in level_rows:
        for key, ratio in (
            ("throughput_rps", "throughput_vs_predict"),
            ("p50_ms", "p50_vs_predict"),
            ("server_cpu_ms_per_request", "server_cpu_vs_predict"),
        ):
            row[ratio] = round(row[key] / reference[key], 3) if reference[key] else None


def parse_costs(variants: list[Variant], repeat: int = 200) -> dict[str, float]:
    """Median microseconds, in this process, of the parsing each protocol body needs before
    the image bytes are in hand (/predict needs none: the body is the image): where a
    difference in server CPU per request could come from."""
    by = {v.key: v for v in variants}
    header = int(dict(by["v2-binary"].headers)[oip_bodies.INFERENCE_HEADER])
    document = json.loads(by["v2-json"].body)
    encoded = document["inputs"][0]["data"][0]
    steps: dict[str, Callable[[], object]] = {
        "v2_binary_json_header": lambda: json.loads(by["v2-binary"].body[:header]),
        "v2_json_body": lambda: json.loads(by["v2-json"].body),
        "v2_json_base64_image": lambda: base64.b64decode(encoded, validate=True),
        "grpc_protobuf_request": lambda: pb.ModelInferRequest.FromString(by["grpc"].body),
    }
    out = {}
    for name, step in steps.items():
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            step()
            times.append(time.perf_counter() - began)
        out[name] = round(statistics.median(times) * 1e6, 1)
    return out


def start(model: str, log_dir: Path) -> tuple[Server, Target, dict[str, Any]]:
    """The server as run_all starts its own (timed to ready, stopped if it never gets there),
    with the gRPC listener on a port chosen here so the protocol's clients can reach it."""
    grpc_port = free_port()
    # The defaults as shipped (backend and precision auto), on the CPU.
    env = serving_env(model, SERVING_DEVICE="cpu", SERVING_GRPC_PORT=str(grpc_port))
    server, ready = start_and_wait(ServerConfig("serving", "serving", env), model, log_dir)
    card = httpx.get(server.base_url + "/ready", timeout=10).json()
    info = {"ready_s": ready["ready_s"], "backend": card.get("backend"),
            "dtype": card.get("dtype"), "device": card.get("device")}  # fmt: skip
    return server, Target(server.base_url, f"127.0.0.1:{grpc_port}", server.pid), info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "resnet18"])
    parser.add_argument("--levels", default="1,4,10", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="counted seconds per point")
    parser.add_argument("--rounds", type=int, default=5, help="turns each variant takes per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds per turn")
    parser.add_argument("--class-count", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS / "oip_compare.json")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    image = small_jpeg()
    variants = request_variants(args.model, image, args.class_count)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="oip-compare-") as tmp:
        server, target, info = start(args.model, Path(tmp))
        try:
            answers = {p.key: asyncio.run(top1(p, target)) for p in variants}
            if len(set(answers.values())) != 1:
                raise SystemExit(f"the variants disagree on the top-1 class: {answers}")
            rows = asyncio.run(
                measure(variants, target, levels, rounds=args.rounds,
                        round_s=args.seconds / args.rounds, warmup_s=args.warmup)
            )  # fmt: skip
        finally:
            server.terminate()
    report = {
        "command": command_line("bench.oip_compare", argv),
        "model": args.model,
        "server": info,
        "image_bytes": len(image),
        "class_count": args.class_count,
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "warmup_s_per_round": args.warmup,
        "top1": answers,
        "parse_us": parse_costs(variants),
        "rows": rows,
        "wall_s": round(time.time() - started, 1),
    }
    write_result(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
