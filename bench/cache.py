"""The prediction cache: the same server without it, with its in-process tier, and with hits
served through Redis, side by side in one run, on a workload that repeats images.

Workload: `--images` distinct photo-like JPEGs (bench/lib/images.photo_variants: crops of real
photographs at 640x480 to 1600x1200, deterministic from `--seed`), held in memory, sent in one
fixed order made by Simon's model of word frequencies: each request is a new image with
probability 1 - `--repeat` (the next of the set), else a copy of a uniformly chosen earlier
request, so an image's chance to come again grows with how often it came (popularity ends up
Zipf-like, exponent about `--repeat`) and the repeat fraction is `--repeat` over any prefix, a
fast configuration's long window and a slow one's short window alike (until the set runs out;
the measured fraction is recorded). `--clients` closed-loop clients share the order
(bench/lib/load.run_sequence).

Configurations, each on a fresh server (random weights, SERVING_NUM_THREADS default):
- `off`: SERVING_CACHE_BYTES=0, every request decoded and inferred;
- `local`: the in-process tier at its default size (SERVING_CACHE_BYTES unset);
- `redis`: a real redis-server on loopback with a password (harness/redis_server.py) and the
  in-process tier off (SERVING_CACHE_BYTES=0): every hit is a Redis GET, which is what it
  measures. With both tiers on, a Redis hit happens once per image per replica (it fills the
  replica's own tier); this is that hit's cost, paid on every hit.

Rounds alternate (`--rounds 2`: off local redis, then redis local off), so a shared machine's
background load falls on all alike; a configuration's rounds are pooled. Each round starts from
an empty cache (a fresh server; Redis flushed), then `--warmup` seconds of requests with
`Cache-Control: no-store` (neither read nor written: the cache stays empty) that are not
counted; the measured window counts from its first request, so cold misses at its start are in
every configuration's figures alike. Then, with the load stopped, `--probe` requests from one
client for images already answered: a hit's cost on a quiet server.

Recorded per configuration: throughput, client p50/p95, the hit ratio from the answers
(X-Cache; identical images in flight together are answered once and count as hits) and from
the server's prediction_cache_requests_total (lookups only), the server-side time of a hit
(timing_ms.total and timing_ms.cache, p50/p95) under load and quiet, CPU per request (server,
this client, Redis), and the issue's goals judged.

    python -m bench.cache --json bench/results/cache.json           # resnet50 (~8 min)
    python -m bench.cache --model resnet18 --images 30 --seconds 4 --rounds 1 --warmup 1
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.settings.config import Settings
from bench.lib.images import photo_variants
from bench.lib.load import LoadResult, Sent, percentile, run_sequence, summarise
from bench.lib.results import publish
from bench.lib.rounds import alternating
from bench.lib.servers import group_cpu_s, process_cpu_s, serving_env
from harness.process import ManagedProcess, app_process
from harness.redis_server import RedisServer

CONFIGS = ("off", "local", "redis")
LABELS = {
    "off": "cache off (`SERVING_CACHE_BYTES=0`)",
    "local": "in process (default `SERVING_CACHE_BYTES`)",
    "redis": "Redis on loopback, in-process tier off (every hit a Redis GET)",
}
# The goals: at 80% repeats, 4x the throughput of cache off; a hit at most 2 ms
# server-side in process, 5 ms through Redis on loopback.
SPEEDUP_GOAL = 4.0
HIT_MS_GOAL = {"local": 2.0, "redis": 5.0}
NO_STORE = {"cache-control": "no-store"}
REDIS_SECONDS = "prediction_cache_redis_duration_seconds"


def repeat_order(images: int, length: int, repeat: float, seed: int) -> list[int]:
    """`length` indices into `images` images: the first is new; each next one is a new image
    (the next unseen) with probability 1 - `repeat`, else a uniformly chosen earlier request
    (Simon's model: the already popular get more popular, a Zipf-like law). Once every image
    has come, every request is a repeat."""
    rng = random.Random(seed)
    order: list[int] = []
    fresh = 0
    for _ in range(length):
        if fresh < images and (not order or rng.random() >= repeat):
            order.append(fresh)
            fresh += 1
        else:
            order.append(order[rng.randrange(len(order))])
    return order


def repeat_fraction(bodies: Sequence[int]) -> float:
    """Of these requests, the fraction whose image came earlier in them."""
    return 1.0 - len(set(bodies)) / len(bodies) if bodies else 0.0


@dataclass(frozen=True)
class Answer:
    """What is kept of one answer: the header, the body's field and its server-side timings."""

    x_cache: str | None
    cache: str | None
    total_ms: float | None
    cache_ms: float | None


def inspect(response: httpx.Response) -> Answer | None:
    if response.status_code != 200:
        return None
    body = response.json()
    timing = body.get("timing_ms", {})
    return Answer(response.headers.get("x-cache"), body.get("cache"), timing.get("total"),
                  timing.get("cache"))  # fmt: skip


def cache_metrics(base_url: str) -> dict[str, float]:
    """The server's prediction-cache counters: `<tier>_<result>` lookups, `coalesced`, and the
    Redis GETs' count and seconds."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "prediction_cache_requests_total":
                out[f"{sample.labels['tier']}_{sample.labels['result']}"] = sample.value
            elif sample.name == "prediction_cache_coalesced_total":
                out["coalesced"] = sample.value
            elif sample.name in (f"{REDIS_SECONDS}_sum", f"{REDIS_SECONDS}_count") and (
                sample.labels.get("op") == "get"
            ):
                out["redis_get_" + sample.name.rsplit("_", 1)[1]] = sample.value
    return out


def metrics_hit_ratio(m: dict[str, float]) -> float | None:
    """Hits over lookups at the first tier asked (in process where there is one, else Redis)."""
    first = "local" if any(k.startswith("local_") for k in m) else "redis"
    lookups = sum(m.get(f"{first}_{result}", 0.0) for result in ("hit", "miss", "error"))
    hits = m.get("local_hit", 0.0) + m.get("redis_hit", 0.0)
    return round(hits / lookups, 4) if lookups else None


def ms_stats(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(percentile(ordered, 50), 3),
            "p95": round(percentile(ordered, 95), 3)}  # fmt: skip


@dataclass
class Window:
    """One configuration's measured window in one round."""

    config: str
    round: int
    load: LoadResult
    sent: list[Sent]
    metrics: dict[str, float]
    server_cpu_s: float
    client_cpu_s: float
    redis_cpu_s: float
    load_1m: tuple[float, float]
    quiet: list[tuple[float, Answer]] = field(default_factory=list)  # client s, answer

    def answered(self) -> list[tuple[Sent, Answer]]:
        return [(s, s.detail) for s in self.sent if s.outcome == "ok" and s.detail is not None]

    def stored_hits(self) -> list[Answer]:
        """Hits on an image whose earlier answer had come back before this request left: served
        from a stored entry (not an identical image's inference in flight at the same time)."""
        first_done: dict[int, float] = {}
        for s, _ in self.answered():
            first_done[s.body] = min(first_done.get(s.body, math.inf), s.done_s)
        return [
            a for s, a in self.answered() if a.x_cache == "hit" and s.sent_s > first_done[s.body]
        ]


def config_env(
    config: str, model: str, redis: RedisServer | None, extra: dict[str, str]
) -> dict[str, str]:
    env = serving_env(model, **extra)
    if config == "local":
        env.pop("SERVING_CACHE_BYTES")  # the default
    elif config == "redis":
        assert redis is not None
        env.update({"SERVING_CACHE_BYTES": "0", "SERVING_CACHE_REDIS_URL": redis.url,
                    "SERVING_CACHE_REDIS_PASSWORD": redis.password})  # fmt: skip
    return env


def shown(env: dict[str, str]) -> dict[str, str]:
    return {k: "<password>" if k == "SERVING_CACHE_REDIS_PASSWORD" else v for k, v in env.items()}


@contextmanager
def fresh_server(env: dict[str, str], log_path: Path) -> Iterator[ManagedProcess]:
    with app_process(env, log_path=log_path) as server:
        try:
            server.wait_ready(timeout_s=600)
        except RuntimeError:
            print(server.log_text()[-3000:], file=sys.stderr)
            raise
        yield server


def measure_round(
    config: str,
    round_no: int,
    *,
    env: dict[str, str],
    bodies: list[bytes],
    order: list[int],
    clients: int,
    seconds: float,
    warmup_s: float,
    probe: int,
    redis: RedisServer | None,
    log_dir: Path,
) -> Window:
    if config == "redis":
        assert redis is not None
        with redis.client() as client:
            client.flushall()
    with fresh_server(env, log_dir / f"{config}-{round_no}.log") as server:
        url = f"{server.base_url}/predict"
        if warmup_s > 0:  # decode and the model warmed on these images, nothing stored
            asyncio.run(run_sequence(url, bodies, list(range(len(bodies))),
                                     content_type="image/jpeg", concurrency=clients,
                                     duration_s=warmup_s, headers=NO_STORE))  # fmt: skip
        load_before = os.getloadavg()[0]
        cpu = group_cpu_s(server.pid), time.process_time()
        redis_cpu = process_cpu_s(redis.proc.pid) if redis and redis.proc else 0.0
        load, sent = asyncio.run(
            run_sequence(url, bodies, order, content_type="image/jpeg", concurrency=clients,
                         duration_s=seconds, inspect=inspect)
        )  # fmt: skip
        window = Window(
            config=config,
            round=round_no,
            load=load,
            sent=sent,
            metrics=cache_metrics(server.base_url),
            server_cpu_s=group_cpu_s(server.pid) - cpu[0],
            client_cpu_s=time.process_time() - cpu[1],
            redis_cpu_s=(process_cpu_s(redis.proc.pid) if redis and redis.proc else 0.0)
            - redis_cpu,
            load_1m=(round(load_before, 2), round(os.getloadavg()[0], 2)),
        )
        # Quiet: one client, images already answered (hits where there is a cache).
        seen = list(dict.fromkeys(s.body for s, _ in window.answered()))
        with httpx.Client(timeout=60) as client:
            for i in range(probe if config != "off" else max(1, probe // 5)):
                body = bodies[seen[i % len(seen)]] if seen else bodies[0]
                started = time.perf_counter()
                response = client.post(url, content=body, headers={"content-type": "image/jpeg"})
                answer = inspect(response)
                if answer is not None:
                    window.quiet.append((time.perf_counter() - started, answer))
    return window


def pooled(config: str, windows: list[Window], env: dict[str, str]) -> dict[str, Any]:
    """A configuration's rounds together."""
    answered = [x for w in windows for x in w.answered()]
    duration = sum(w.load.duration_s for w in windows)
    # Latencies and failures of the requests answered within each window.
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    for w in windows:
        for s in w.sent:
            if s.done_s <= w.load.duration_s:
                if s.outcome == "ok":
                    latencies.append(s.done_s - s.sent_s)
                else:
                    failures[s.outcome] += 1
    load = summarise(windows[0].load.concurrency, duration, latencies, failures)
    answers = [a for _, a in answered]
    hits = [a for a in answers if a.x_cache == "hit"]
    stored = [a for w in windows for a in w.stored_hits()]
    misses = [a for a in answers if a.x_cache == "miss"]
    metrics: Counter[str] = Counter()
    for w in windows:
        metrics.update(w.metrics)
    requests = sum(len(w.sent) for w in windows)
    quiet = [x for w in windows for x in w.quiet]
    quiet_hits = [(s, a) for s, a in quiet if a.x_cache == "hit"]
    quiet_misses = [(s, a) for s, a in quiet if a.x_cache != "hit"]
    gets = metrics.get("redis_get_count", 0.0)

    def per_request(seconds: float) -> float:
        return round(seconds * 1000.0 / requests, 2) if requests else 0.0

    return {
        "config": config,
        "label": LABELS[config],
        "settings": shown(env),
        **asdict(load),
        "round_rps": [w.load.throughput_rps for w in windows],
        "requests_sent": requests,
        "answered": len(answers),
        "repeat_fraction": round(
            statistics.fmean(repeat_fraction([s.body for s in w.sent]) for w in windows), 4
        ),
        "distinct_images": [len({s.body for s in w.sent}) for w in windows],
        "hits": len(hits),
        "hit_ratio": round(len(hits) / len(answers), 4) if answers else 0.0,
        "x_cache_agrees_with_body": all(a.x_cache == a.cache for a in answers),
        "stored_hits": len(stored),
        "metrics": dict(metrics),
        "metrics_hit_ratio": metrics_hit_ratio(dict(metrics)),
        "coalesced": int(metrics.get("coalesced", 0)),
        "hit_total_ms": ms_stats([a.total_ms for a in stored if a.total_ms is not None]),
        "hit_cache_ms": ms_stats([a.cache_ms for a in stored if a.cache_ms is not None]),
        "miss_total_ms": ms_stats([a.total_ms for a in misses if a.total_ms is not None]),
        "redis_get_mean_ms": round(metrics["redis_get_sum"] * 1000.0 / gets, 3) if gets else None,
        "quiet": {
            "hits": len(quiet_hits),
            "hit_total_ms": ms_stats([a.total_ms for _, a in quiet_hits if a.total_ms is not None]),
            "hit_cache_ms": ms_stats([a.cache_ms for _, a in quiet_hits if a.cache_ms is not None]),
            "hit_client_ms": ms_stats([s * 1000.0 for s, _ in quiet_hits]),
            "miss_total_ms": ms_stats(
                [a.total_ms for _, a in quiet_misses if a.total_ms is not None]
            ),
        },
        "cpu_ms_per_request": {
            "server": per_request(sum(w.server_cpu_s for w in windows)),
            "client": per_request(sum(w.client_cpu_s for w in windows)),
            "redis": per_request(sum(w.redis_cpu_s for w in windows)),
        },
        "load_1m": [x for w in windows for x in w.load_1m],
    }


def cpu_ms(row: dict[str, Any]) -> float:
    return float(sum(row["cpu_ms_per_request"].values()))


def goals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, judged on this run: speed-up over cache off (in process, and through
    Redis for comparison), and a stored hit's median server-side time under the load."""
    out: dict[str, Any] = {}
    off = rows.get("off")
    for config in ("local", "redis"):
        row = rows.get(config)
        if row is None:
            continue
        if off and off["throughput_rps"] > 0:
            ratio = row["throughput_rps"] / off["throughput_rps"]
            r = row["hit_ratio"]
            out[f"speedup_{config}"] = {
                "ratio": round(ratio, 2),
                "goal": SPEEDUP_GOAL,
                "met": ratio >= SPEEDUP_GOAL,
                # With free hits the ceiling is 1 / (1 - hit ratio).
                "ceiling_free_hits": round(1.0 / (1.0 - r), 2) if r < 1 else None,
                # What the machine's CPU per request (server, client, Redis) alone predicts.
                "cpu_ratio": round(cpu_ms(off) / cpu_ms(row), 2) if cpu_ms(row) else None,
            }
        hit = row["hit_total_ms"]
        if hit["n"]:
            out[f"hit_ms_{config}"] = {
                "p50": hit["p50"],
                "p95": hit["p95"],
                "quiet_p50": row["quiet"]["hit_total_ms"]["p50"],
                "goal": HIT_MS_GOAL[config],
                "met": hit["p50"] <= HIT_MS_GOAL[config],
                "p95_within": hit["p95"] <= HIT_MS_GOAL[config],
            }
    return out


def run(
    *,
    model: str = "resnet50",
    configs: Sequence[str] = CONFIGS,
    clients: int = 10,
    images: int = 1000,
    seed: int = 0,
    repeat: float = 0.8,
    seconds: float = 45.0,
    rounds: int = 2,
    warmup_s: float = 5.0,
    probe: int = 100,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    bodies = photo_variants(images, seed)
    made_s = time.monotonic() - started
    # More than any window sends: the repeat fraction holds until the set runs out.
    order = repeat_order(images, 100_000, repeat, seed)
    sizes = sorted(len(b) for b in bodies)
    schedule = alternating(configs, rounds)
    windows: dict[str, list[Window]] = {c: [] for c in configs}
    envs: dict[str, dict[str, str]] = {}
    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        redis = None
        if "redis" in configs:
            redis = stack.enter_context(RedisServer(log_dir / "redis.log"))
        for i, config in enumerate(schedule):
            envs[config] = config_env(config, model, redis, env or {})
            window = measure_round(
                config, i, env=envs[config], bodies=bodies, order=order, clients=clients,
                seconds=seconds, warmup_s=warmup_s, probe=probe, redis=redis, log_dir=log_dir,
            )  # fmt: skip
            windows[config].append(window)
            print(f"round {i} {config}: {window.load.throughput_rps} req/s, "
                  f"{sum(1 for _, a in window.answered() if a.x_cache == 'hit')} hits of "
                  f"{len(window.answered())}", file=sys.stderr)  # fmt: skip
    rows = {c: pooled(c, windows[c], envs[c]) for c in configs}
    return {
        "model": model,
        "clients": clients,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "schedule": schedule,
        "warmup_s_per_round": warmup_s,
        "probe_requests": probe,
        "default_cache_bytes": Settings.model_fields["cache_bytes"].default,
        "workload": {
            "images": images,
            "seed": seed,
            "repeat_target": repeat,
            "bytes_min": sizes[0],
            "bytes_median": sizes[len(sizes) // 2],
            "bytes_max": sizes[-1],
            "bytes_mean": round(statistics.fmean(sizes)),
            "made_s": round(made_s, 1),
        },
        "configs": list(rows.values()),
        "goals": goals(rows),
    }


def failed_claims(report: dict[str, Any]) -> list[str]:
    """What is wrong with a run as a measurement: failed requests, a cached configuration without
    hits, or hits where the cache is off."""
    problems = []
    for row in report["configs"]:
        if row["failed"]:
            problems.append(f"{row['config']}: {row['failed']} failed: {row['failures']}")
        if row["config"] == "off" and row["hits"]:
            problems.append(f"off: {row['hits']} hits with the cache off")
        if row["config"] != "off" and not row["hits"]:
            problems.append(f"{row['config']}: no hits")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of off,local,redis")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=float, default=0.8, help="fraction of repeats")
    parser.add_argument("--seconds", type=float, default=45.0, help="per configuration per round")
    parser.add_argument("--rounds", type=int, default=2, help="the order reversed every other")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds, no-store, per round")
    parser.add_argument("--probe", type=int, default=100, help="quiet requests after each round")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for every server, repeatable"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown configurations: {sorted(unknown)}")
    report = run(model=args.model, configs=configs, clients=args.clients, images=args.images,
                 seed=args.seed, repeat=args.repeat, seconds=args.seconds, rounds=args.rounds,
                 warmup_s=args.warmup, probe=args.probe,
                 env=dict(item.split("=", 1) for item in args.env))  # fmt: skip
    return publish(
        report, name="cache", argv=argv, json_path=args.json, problems=failed_claims(report)
    )


if __name__ == "__main__":
    sys.exit(main())
