"""What shadowing costs: /predict at 10 clients, 0%, 10% and 100% copied to a second server.

One server answers /predict while it copies that share of its answers to a second server
(SERVING_SHADOW_URL, app/shadow/), the three side by side in one run.

Two `python -m app` processes (serving_env's defaults: random weights, the prediction cache off
so that every request, and every copy, runs the model): the target, started once for the whole
run, and the measured server, started afresh for each round with SERVING_SHADOW_URL pointing at
the target and SERVING_SHADOW_PERCENT the round's (SERVING_SHADOW_CONCURRENCY `--concurrency`,
4 by default). The configuration at 0% has the shadow set up and never samples: what it costs
to be ready to shadow.

On one machine the target's forward passes compete with the measured server's for the same
CPUs, as two pods on one node would; in a cluster the stable and the canary usually run on
different nodes. So the target's CPU is recorded apart (per request of the measured server),
and so are the copies: how many were sent, compared, failed or dropped (the server's
shadow_comparisons_total), and how many /predict the target answered.

Rounds alternate (bench/lib/rounds.py: `--rounds 2` gives 0 10 100 100 10 0), each with
`--warmup` seconds of the closed loop not counted, running straight into the `--seconds`
counted window; a configuration's rounds are pooled. Recorded per configuration: throughput and
client p50/p95 (and each round's), their ratios to 0%, CPU ms per request of the server, of the
target and of this load generator, and the copies' outcomes.

    python -m bench.shadow --json bench/results/shadow.json     # resnet50, ~6 min
    python -m bench.shadow --model resnet18 --seconds 3 --warmup 1 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.lib.images import small_jpeg
from bench.lib.load import summarise
from bench.lib.results import publish
from bench.lib.rounds import alternating, round_figures
from bench.lib.servers import process_cpu_s, serving_env
from bench.oip_load import Window, closed_loop, http_senders
from harness.process import ManagedProcess, app_process

PERCENTS = (0.0, 10.0, 100.0)
RESULTS = ("agree", "disagree", "error", "dropped")


def config_name(percent: float) -> str:
    return f"{percent:g}%"


def server_env(model: str, target: str, percent: float, concurrency: int,
               extra: dict[str, str]) -> dict[str, str]:  # fmt: skip
    return serving_env(model, SERVING_SHADOW_URL=target, SERVING_SHADOW_PERCENT=f"{percent:g}",
                       SERVING_SHADOW_CONCURRENCY=str(concurrency), **extra)  # fmt: skip


def server_counts(base_url: str) -> dict[str, float]:
    """From a server's /metrics: /predict answered 200, and the copies by result."""
    out: dict[str, float] = {}
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (s.name == "request_count_total" and s.labels.get("route") == "/predict"
                    and s.labels.get("status") == "200"):  # fmt: skip
                out["predict_ok"] = out.get("predict_ok", 0.0) + s.value
            elif s.name == "shadow_comparisons_total":
                out[s.labels["result"]] = s.value
    return out


@dataclass
class Round:
    config: str
    percent: float
    round: int
    latencies_s: list[float]
    failures: Counter[str]
    duration_s: float
    server_cpu_s: float
    client_cpu_s: float
    target_cpu_s: float  # over the window, as the server's
    served: int  # /predict answered 200 by the server over the round (warm-up and window)
    copies: dict[str, float]  # the server's shadow_comparisons_total by result, at the end
    target_answered: int  # /predict the target answered over the round
    exit_code: int
    load_1m: tuple[float, float]

    @property
    def ok(self) -> int:
        return len(self.latencies_s)


async def counted_window(
    url: str, body: bytes, *, clients: int, warmup_s: float, seconds: float, server_pid: int,
    target_pid: int,
) -> tuple[Window, float]:  # fmt: skip
    """The closed loop (bench/oip_load.closed_loop), and the target's CPU over its window."""

    async def target_clock() -> float:
        await asyncio.sleep(warmup_s)
        before = process_cpu_s(target_pid)
        await asyncio.sleep(seconds)
        return process_cpu_s(target_pid) - before

    headers = {"content-type": "image/jpeg"}
    async with http_senders(url, body, headers, clients) as senders:
        return await asyncio.gather(
            closed_loop(senders, duration_s=seconds, warmup_s=warmup_s, server_pid=server_pid),
            target_clock(),
        )


async def settle(base_url: str, timeout_s: float = 30.0) -> None:
    """Until the server has no copy in flight (/model's shadow.in_flight), so the round's
    counts are final."""
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(int(timeout_s / 0.1)):
            shadow = (await client.get(f"{base_url}/model")).json().get("shadow") or {}
            if not shadow.get("in_flight"):
                return
            await asyncio.sleep(0.1)


def measure_round(
    percent: float, round_no: int, *, env: dict[str, str], body: bytes, clients: int,
    seconds: float, warmup_s: float, target: ManagedProcess, log_dir: Path,
) -> Round:  # fmt: skip
    config = config_name(percent)
    target_before = server_counts(target.base_url).get("predict_ok", 0.0)
    log_path = log_dir / f"{config.rstrip('%')}-{round_no}.log"
    with app_process(env, log_path=log_path) as server:
        try:
            server.wait_ready(timeout_s=600)
        except RuntimeError:
            print(server.log_text()[-3000:], file=sys.stderr)
            raise
        load_before = os.getloadavg()[0]
        window, target_cpu = asyncio.run(
            counted_window(
                f"{server.base_url}/predict",
                body,
                clients=clients,
                warmup_s=warmup_s,
                seconds=seconds,
                server_pid=server.pid,
                target_pid=target.pid,
            )
        )
        load_after = os.getloadavg()[0]
        asyncio.run(settle(server.base_url))
        counts = server_counts(server.base_url)
        exit_code = server.terminate()
    target_after = server_counts(target.base_url).get("predict_ok", 0.0)
    return Round(
        config=config,
        percent=percent,
        round=round_no,
        latencies_s=window.latencies_s,
        failures=window.failures,
        duration_s=window.duration_s,
        server_cpu_s=window.server_cpu_s,
        client_cpu_s=window.client_cpu_s,
        target_cpu_s=target_cpu,
        served=int(counts.get("predict_ok", 0)),
        copies={r: counts.get(r, 0.0) for r in RESULTS},
        target_answered=int(target_after - target_before),
        exit_code=exit_code,
        load_1m=(round(load_before, 2), round(load_after, 2)),
    )


def pooled(rounds: list[Round], env: dict[str, str]) -> dict[str, Any]:
    """A configuration's rounds together."""
    latencies = [x for r in rounds for x in r.latencies_s]
    failures: Counter[str] = Counter()
    for r in rounds:
        failures.update(r.failures)
    load = summarise(0, sum(r.duration_s for r in rounds), latencies, failures)
    ok = sum(r.ok for r in rounds)
    served = sum(r.served for r in rounds)
    copies = {k: sum(r.copies[k] for r in rounds) for k in RESULTS}
    sent = copies["agree"] + copies["disagree"] + copies["error"]
    per_round = [summarise(0, r.duration_s, r.latencies_s, r.failures) for r in rounds]

    def per_request(seconds: float) -> float:
        return round(seconds * 1000.0 / ok, 3) if ok else 0.0

    row = asdict(load)
    del row["concurrency"]
    return {
        "config": rounds[0].config,
        "percent": rounds[0].percent,
        "settings": env,
        **row,
        **round_figures(per_round, spread_of="p50"),
        "served": served,
        "copies": copies,
        "copies_per_request": round(sent / served, 4) if served else 0.0,
        "dropped_per_sampled": round(copies["dropped"] / (sent + copies["dropped"]), 4)
        if sent + copies["dropped"]
        else None,
        "target_answered": sum(r.target_answered for r in rounds),
        "cpu_ms_per_request": {
            "server": per_request(sum(r.server_cpu_s for r in rounds)),
            "target": per_request(sum(r.target_cpu_s for r in rounds)),
            "client": per_request(sum(r.client_cpu_s for r in rounds)),
        },
        "server_exit_codes": [r.exit_code for r in rounds],
        "load_1m": [x for r in rounds for x in r.load_1m],
    }


def with_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's throughput and p50/p95 against the 0% row's (the first, if none is 0%)."""
    base = next((r for r in rows if r["percent"] == 0.0), rows[0] if rows else None)
    for row in rows:
        for key, name in (("throughput_rps", "throughput"), ("p50_ms", "p50"), ("p95_ms", "p95")):
            ref = base[key] if base else 0.0
            row[f"{name}_vs_0"] = round(row[key] / ref, 4) if ref else None


def run(
    *,
    model: str = "resnet50",
    percents: Sequence[float] = PERCENTS,
    clients: int = 10,
    concurrency: int = 4,
    seconds: float = 30.0,
    rounds: int = 2,
    warmup_s: float = 5.0,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = small_jpeg()
    schedule = alternating(list(percents), rounds)
    measured: dict[float, list[Round]] = {p: [] for p in percents}
    envs: dict[float, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        target_env = serving_env(model, **(env or {}))
        with app_process(target_env, log_path=log_dir / "target.log") as target:
            try:
                target.wait_ready(timeout_s=600)
            except RuntimeError:
                print(target.log_text()[-3000:], file=sys.stderr)
                raise
            for i, percent in enumerate(schedule):
                envs[percent] = server_env(model, target.base_url, percent, concurrency,
                                           env or {})  # fmt: skip
                r = measure_round(percent, i, env=envs[percent], body=body, clients=clients,
                                  seconds=seconds, warmup_s=warmup_s, target=target,
                                  log_dir=log_dir)  # fmt: skip
                measured[percent].append(r)
                print(f"round {i} {r.config}: {r.ok / r.duration_s:.2f} req/s, copies "
                      f"{r.copies}, target answered {r.target_answered}, load "
                      f"{r.load_1m}", file=sys.stderr)  # fmt: skip
    rows = [pooled(measured[p], envs[p]) for p in percents]
    with_ratios(rows)
    return {
        "model": model,
        "clients": clients,
        "shadow_concurrency": concurrency,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "schedule": [config_name(p) for p in schedule],
        "warmup_s_per_round": warmup_s,
        "request_bytes": len(body),
        "target_settings": serving_env(model, **(env or {})),
        "configs": rows,
    }


def failed_claims(report: dict[str, Any]) -> list[str]:
    """What is wrong with a run as a measurement: failed requests, a server that did not stop
    cleanly, copies at 0%, or none compared at 100%. (Copies that failed or were dropped are
    what the run measures: recorded, not a fault.)"""
    problems = []
    for row in report["configs"]:
        name = row["config"]
        if row["failed"]:
            problems.append(f"{name}: {row['failed']} failed: {row['failures']}")
        if not row["ok"]:
            problems.append(f"{name}: no request answered in the window")
        if any(row["server_exit_codes"]):
            problems.append(f"{name}: server exit codes {row['server_exit_codes']}")
        copies = row["copies"]
        if row["percent"] == 0.0 and any(copies.values()):
            problems.append(f"{name}: copies at 0%: {copies}")
        if row["percent"] == 100.0 and not copies["agree"] + copies["disagree"]:
            problems.append(f"{name}: no copy compared at 100%")
    return problems


def parse_percents(text: str) -> list[float]:
    values = [float(item) for item in text.split(",") if item.strip()]
    if not values or any(not 0.0 <= v <= 100.0 for v in values):
        raise argparse.ArgumentTypeError("comma-separated percentages, each 0-100")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument(
        "--percents",
        type=parse_percents,
        default=list(PERCENTS),
        help="SERVING_SHADOW_PERCENT of each configuration (default 0,10,100)",
    )
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument(
        "--concurrency", type=int, default=4, help="SERVING_SHADOW_CONCURRENCY of the server"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="per configuration per round")
    parser.add_argument("--rounds", type=int, default=2, help="the order reversed every other")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds per round, not counted")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for both servers, repeatable"
    )
    parser.add_argument("--json", type=Path, help="write the result there (bench/results/...)")
    args = parser.parse_args(argv)
    report = run(model=args.model, percents=args.percents, clients=args.clients,
                 concurrency=args.concurrency, seconds=args.seconds, rounds=args.rounds,
                 warmup_s=args.warmup,
                 env=dict(item.split("=", 1) for item in args.env))  # fmt: skip
    return publish(
        report, name="shadow", argv=argv, json_path=args.json, problems=failed_claims(report)
    )


if __name__ == "__main__":
    sys.exit(main())
