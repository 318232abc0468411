"""What tracing costs: the same server with tracing off, sampled at 1%, and at 100%, side by
side in one run, exporting to a real OTLP/HTTP receiver on loopback.

Configurations, each on a fresh server (serving_env's defaults: random weights, the prediction
cache off so that every request runs the model), configured by the standard variables only
(app/telemetry/tracing.py):
- `off`: OTEL_TRACES_EXPORTER=none (the default; every tracer is the API's no-op one);
- `sampled`: OTEL_TRACES_EXPORTER=otlp, OTEL_TRACES_SAMPLER=parentbased_traceidratio,
  OTEL_TRACES_SAMPLER_ARG=`--ratio` (0.01);
- `always`: OTEL_TRACES_EXPORTER=otlp, OTEL_TRACES_SAMPLER=parentbased_always_on.
The exporter sends OTLP/HTTP protobuf (the batch processor's defaults: OTEL_BSP_* unset) to
harness/otlp_receiver.py, started once in its own process, so its CPU shows apart: it decodes
every export as a collector's first step does, counts the spans and answers 200. The clients
send no traceparent: each request is a new trace, sampled by the root's ratio.

Rounds alternate (`--rounds 2`: off sampled always, then always sampled off), a fresh server
each, so a shared machine's background load falls on all alike; before the first, `--prime`
seconds of the same load on a server not measured (on this machine the first round after a
quiet spell ran slow, the hypervisor taking up to a sixth of the CPUs). Each round: `--warmup`
seconds of the closed loop (not counted) running straight into the `--seconds` counted window;
then the server's /metrics (requests served, tracing_spans_dropped_total); then SIGTERM, which
flushes what is left to export, and the receiver's counts. A configuration's rounds are pooled.

Recorded per configuration: throughput and client p50/p95 (and each round's), their ratios to
off, spans received per request served (the whole round: warm-up and window, every span flushed
at the end), bytes exported per request, spans dropped, CPU ms per request of the server and
this load generator over the window and of the receiver over the round (per request served: it
spends a few clock ticks of 10 ms per round); and the issue's goal judged: at 1% sampling, at
least 97% of off's throughput with p95 within 5%.

    python -m bench.tracing --json bench/results/tracing.json     # resnet50 (~7 min)
    python -m bench.tracing --model resnet18 --seconds 3 --warmup 1 --rounds 1 --prime 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
from harness.process import ManagedProcess, app_process, free_port

CONFIGS = ("off", "sampled", "always")
# The goal: at 1% sampling, >= 97% of the throughput with tracing off, p95 within 5%.
THROUGHPUT_GOAL = 0.97
P95_GOAL = 1.05


def labels(ratio: float) -> dict[str, str]:
    return {
        "off": "off (`OTEL_TRACES_EXPORTER=none`)",
        "sampled": f"{ratio:.0%} sampled (`parentbased_traceidratio`, {ratio:g})",
        "always": "100% (`parentbased_always_on`)",
    }


def config_env(config: str, model: str, endpoint: str, ratio: float,
               extra: dict[str, str]) -> dict[str, str]:  # fmt: skip
    env = serving_env(model, **extra)
    if config == "off":
        env["OTEL_TRACES_EXPORTER"] = "none"
        return env
    env.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "resnet-serving-bench"})  # fmt: skip
    if config == "sampled":
        env.update({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}"})  # fmt: skip
    else:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    return env


def server_counts(base_url: str) -> dict[str, float]:
    """From the server's /metrics: /predict requests answered 200, and spans dropped by
    reason."""
    out: dict[str, float] = {}
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "request_count_total" and s.labels.get("route") == "/predict":
                key = "predict_ok" if s.labels.get("status") == "200" else "predict_other"
            elif s.name == "tracing_spans_dropped_total":
                key = f"dropped_{s.labels.get('reason', '')}"
            else:
                continue
            out[key] = out.get(key, 0.0) + s.value
    return out


def receiver_stats(receiver: ManagedProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{receiver.base_url}/stats", timeout=10).json()
    return stats


@dataclass
class Round:
    """One configuration's round: its window, and what the server and the receiver counted."""

    config: str
    round: int
    latencies_s: list[float]
    failures: Counter[str]
    duration_s: float
    server_cpu_s: float
    client_cpu_s: float
    receiver_cpu_s: float  # over the round, as the spans: its CPU is small against a tick
    others_cpu_s: float  # the machine's busy CPU over the window less the server's and client's
    steal_s: float  # taken by the hypervisor over the window, both CPUs
    served: int  # /predict answered 200 over the round (warm-up and window)
    spans: int  # received over the round, the last flushed at the server's exit
    span_names: dict[str, int]
    export_bytes: int
    exports: int
    dropped: dict[str, float]
    exit_code: int
    load_1m: tuple[float, float]

    @property
    def ok(self) -> int:
        return len(self.latencies_s)


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy (every process, the kernel's interrupts),
    and stolen by the hypervisor, since boot: /proc/stat's first line."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


async def counted_window(
    url: str, body: bytes, *, clients: int, warmup_s: float, seconds: float, server_pid: int
) -> tuple[Window, tuple[float, float]]:
    """The closed loop (bench/oip_load.closed_loop): the warm-up running straight into the
    window, the server's and this process's CPU over the window; and the machine's busy and
    stolen CPU over the same window (what else ran: busy less the server and the client)."""

    async def machine_clock() -> tuple[float, float]:
        await asyncio.sleep(warmup_s)
        before = machine_cpu_s()
        await asyncio.sleep(seconds)
        after = machine_cpu_s()
        return after[0] - before[0], after[1] - before[1]

    headers = {"content-type": "image/jpeg"}
    async with http_senders(url, body, headers, clients) as senders:
        return await asyncio.gather(
            closed_loop(senders, duration_s=seconds, warmup_s=warmup_s, server_pid=server_pid),
            machine_clock(),
        )


# One /predict's spans as the app exports them at 100% (captured from a real export, cache
# off): the server span and its ASGI events, then admission's, the body's and the pipeline's;
# with batches of about five (bench/results/tracing.json's span names), one "inference batch"
# span per five requests.
SERVER_ATTRIBUTES: dict[str, str | int] = {
    "url.scheme": "http", "server.address": "127.0.0.1", "server.port": 8000,
    "network.protocol.version": "1.1", "url.path": "/predict", "http.request.method": "POST",
    "user_agent.original": "python-httpx/0.28.1", "client.address": "127.0.0.1",
    "client.port": 50000, "http.route": "/predict",
    "request.id": "0123456789abcdef0123456789abcdef",
}  # fmt: skip


def sdk_cost(
    endpoint: str, ratio: float, *, requests: int = 2000, batch: int = 512
) -> dict[str, float]:
    """What tracing adds per request in the server's process, in CPU µs, measured here in
    process on spans shaped as one /predict's: recording them with the SDK (spans, attributes,
    a link, the processor's hand-off) at 100%, and with the root sampled at `ratio` (mostly
    non-recording spans); encoding them to OTLP protobuf in batches of `batch` (the batch
    processor's default); and the exporter's whole export (encoding and the HTTP POST) to the
    receiver at `endpoint`. A lower bound of the server's share: the ASGI instrumentation's own
    work around the spans (wrapping receive and send, reading headers) is not in it."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBasedTraceIdRatio

    ended: list[ReadableSpan] = []

    class Keep(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ended.append(span)

    resource = Resource.create({"service.name": "resnet-serving-bench"})
    providers = {
        "always": TracerProvider(sampler=ALWAYS_ON, resource=resource),
        "sampled": TracerProvider(sampler=ParentBasedTraceIdRatio(ratio), resource=resource),
    }
    for p in providers.values():
        p.add_span_processor(Keep())
    tracer = providers["always"].get_tracer("resnet-serving")
    server, internal = trace.SpanKind.SERVER, trace.SpanKind.INTERNAL
    batch_span = tracer.start_span("inference batch")

    def one(i: int) -> None:
        nonlocal batch_span
        with tracer.start_as_current_span("POST /predict", kind=server,
                                          attributes=SERVER_ATTRIBUTES) as root:  # fmt: skip
            with tracer.start_as_current_span("admission"):
                pass
            with (
                tracer.start_as_current_span("read body"),
                tracer.start_as_current_span("POST /predict http receive", kind=internal) as s,
            ):
                s.set_attribute("asgi.event.type", "http.request")
            with tracer.start_as_current_span("decode") as s:
                s.set_attribute("image.bytes", 61_000)
                s.set_attributes({"image.format": "JPEG", "image.width": 512,
                                  "image.height": 600})  # fmt: skip
            tracer.start_span("queue").end()
            if i % 5 == 0:
                batch_span.end()
                batch_span = tracer.start_span(
                    "inference batch", attributes={"batch.size": 5, "model.name": "resnet50"}
                )
            link = trace.Link(batch_span.get_span_context())
            attributes: dict[str, str | int] = {"batch.size": 5, "model.name": "resnet50"}
            tracer.start_span("inference", links=[link], attributes=attributes).end()
            with tracer.start_as_current_span("top_k", attributes={"top_k": 5}):
                pass
            root.set_attribute("http.response.status_code", 200)
            with tracer.start_as_current_span("POST /predict http send", kind=internal) as s:
                s.set_attributes({"asgi.event.type": "http.response.start",
                                  "http.response.status_code": 200})  # fmt: skip
            with tracer.start_as_current_span("POST /predict http send", kind=internal) as s:
                s.set_attribute("asgi.event.type", "http.response.body")

    def cpu_s(work: Callable[[], object]) -> float:
        """The least CPU time of three runs (this process only: the receiver is another)."""
        times = []
        for _ in range(3):
            started = time.process_time()
            work()
            times.append(time.process_time() - started)
        return min(times)

    def record() -> None:
        ended.clear()
        for i in range(requests):
            one(i)

    tracer = providers["sampled"].get_tracer("resnet-serving")
    batch_span = tracer.start_span("inference batch")
    sampled_s = cpu_s(record)
    tracer = providers["always"].get_tracer("resnet-serving")
    batch_span = tracer.start_span("inference batch")
    record_s = cpu_s(record)
    chunks = [ended[i : i + batch] for i in range(0, len(ended), batch)]
    size = sum(len(encode_spans(c).SerializePartialToString()) for c in chunks)
    encode_s = cpu_s(lambda: [encode_spans(c).SerializePartialToString() for c in chunks])
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    export_s = cpu_s(lambda: [exporter.export(c) for c in chunks])
    exporter.shutdown()  # type: ignore[no-untyped-call]
    for p in providers.values():
        p.shutdown()

    def us(seconds: float) -> float:
        return round(seconds * 1e6 / requests, 1)

    return {"requests": requests, "spans_per_request": round(len(ended) / requests, 2),
            "bytes_per_request": round(size / requests, 1), "record_us": us(record_s),
            "record_us_sampled": us(sampled_s), "sampling_ratio": ratio,
            "encode_us": us(encode_s), "export_us": us(export_s)}  # fmt: skip


def measure_round(
    config: str, round_no: int, *, env: dict[str, str], body: bytes, clients: int,
    seconds: float, warmup_s: float, receiver: ManagedProcess, log_dir: Path,
) -> Round:  # fmt: skip
    before = receiver_stats(receiver)
    receiver_cpu = process_cpu_s(receiver.pid)
    with app_process(env, log_path=log_dir / f"{config}-{round_no}.log") as server:
        try:
            server.wait_ready(timeout_s=600)
        except RuntimeError:
            print(server.log_text()[-3000:], file=sys.stderr)
            raise
        load_before = os.getloadavg()[0]
        window, (busy_s, steal_s) = asyncio.run(
            counted_window(
                f"{server.base_url}/predict",
                body,
                clients=clients,
                warmup_s=warmup_s,
                seconds=seconds,
                server_pid=server.pid,
            )
        )
        load_after = os.getloadavg()[0]
        counts = server_counts(server.base_url)
        exit_code = server.terminate()  # SIGTERM: what is left in the queue is exported first
    after = receiver_stats(receiver)
    receiver_cpu = process_cpu_s(receiver.pid) - receiver_cpu
    names = Counter(after["names"])
    names.subtract(before["names"])
    return Round(
        config=config,
        round=round_no,
        latencies_s=window.latencies_s,
        failures=window.failures,
        duration_s=window.duration_s,
        server_cpu_s=window.server_cpu_s,
        client_cpu_s=window.client_cpu_s,
        receiver_cpu_s=receiver_cpu,
        others_cpu_s=max(0.0, busy_s - window.server_cpu_s - window.client_cpu_s),
        steal_s=steal_s,
        served=int(counts.get("predict_ok", 0)),
        spans=after["spans"] - before["spans"],
        span_names={k: v for k, v in sorted(names.items()) if v},
        export_bytes=after["bytes"] - before["bytes"],
        exports=after["exports"] - before["exports"],
        dropped={
            k.removeprefix("dropped_"): v for k, v in counts.items() if k.startswith("dropped_")
        },
        exit_code=exit_code,
        load_1m=(round(load_before, 2), round(load_after, 2)),
    )


def pooled(config: str, rounds: list[Round], env: dict[str, str], label: str) -> dict[str, Any]:
    """A configuration's rounds together."""
    latencies = [x for r in rounds for x in r.latencies_s]
    failures: Counter[str] = Counter()
    for r in rounds:
        failures.update(r.failures)
    load = summarise(0, sum(r.duration_s for r in rounds), latencies, failures)
    ok = sum(r.ok for r in rounds)
    served = sum(r.served for r in rounds)
    spans = sum(r.spans for r in rounds)
    names: Counter[str] = Counter()
    dropped: dict[str, float] = {}
    for r in rounds:
        names.update(r.span_names)
        for reason, n in r.dropped.items():
            dropped[reason] = dropped.get(reason, 0.0) + n
    per_round = [summarise(0, r.duration_s, r.latencies_s, r.failures) for r in rounds]

    def per_request(seconds: float, requests: int = ok) -> float:
        return round(seconds * 1000.0 / requests, 3) if requests else 0.0

    row = asdict(load)
    del row["concurrency"]
    return {
        "config": config,
        "label": label,
        "settings": env,
        **row,
        **round_figures(per_round, spread_of="p95"),
        "served": served,
        "spans_received": spans,
        "spans_per_request": round(spans / served, 4) if served else 0.0,
        "span_names": dict(sorted(names.items())),
        "exports": sum(r.exports for r in rounds),
        "export_bytes_per_request": round(sum(r.export_bytes for r in rounds) / served, 1)
        if served
        else 0.0,
        "receiver_cpu_us_per_span": round(sum(r.receiver_cpu_s for r in rounds) * 1e6 / spans, 1)
        if spans
        else None,
        "spans_dropped": int(sum(dropped.values())),
        "spans_dropped_by_reason": dropped,
        "cpu_ms_per_request": {
            "server": per_request(sum(r.server_cpu_s for r in rounds)),
            "receiver": per_request(sum(r.receiver_cpu_s for r in rounds), served),
            "client": per_request(sum(r.client_cpu_s for r in rounds)),
        },
        # What else the machine did in each window, in CPUs (of its 2): every other process
        # (the receiver included, a few ticks), and the hypervisor's steal.
        "round_others_cpus": [round(r.others_cpu_s / r.duration_s, 3) for r in rounds],
        "round_steal_cpus": [round(r.steal_s / r.duration_s, 3) for r in rounds],
        "server_exit_codes": [r.exit_code for r in rounds],
        "load_1m": [x for r in rounds for x in r.load_1m],
    }


def with_ratios(rows: dict[str, dict[str, Any]]) -> None:
    """Each row's throughput and p50/p95 against off's, pooled."""
    off = rows.get("off")
    for row in rows.values():
        for key, name in (("throughput_rps", "throughput"), ("p50_ms", "p50"), ("p95_ms", "p95")):
            base = off[key] if off else 0.0
            row[f"{name}_vs_off"] = round(row[key] / base, 4) if base else None


def goals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal at 1% (throughput >= 97% of off's, p95 within 5%), and what 100%
    costs, with the noise of this run beside each: the spread between rounds of one
    configuration."""
    out: dict[str, Any] = {}
    off = rows.get("off")
    if off is None:
        return out
    noise = off["round_spread"]
    for config in ("sampled", "always"):
        row = rows.get(config)
        if row is None or row["throughput_vs_off"] is None:
            continue
        entry = {
            "throughput_vs_off": row["throughput_vs_off"],
            "p95_vs_off": row["p95_vs_off"],
            "off_round_spread": noise,
            "round_spread": row["round_spread"],
            "server_cpu_ms_more": round(
                row["cpu_ms_per_request"]["server"] - off["cpu_ms_per_request"]["server"], 2
            ),
            "receiver_cpu_ms": row["cpu_ms_per_request"]["receiver"],
        }
        if config == "sampled":
            entry.update({
                "throughput_goal": THROUGHPUT_GOAL,
                "p95_goal": P95_GOAL,
                "throughput_met": row["throughput_vs_off"] >= THROUGHPUT_GOAL,
                "p95_met": row["p95_vs_off"] is not None and row["p95_vs_off"] <= P95_GOAL,
            })  # fmt: skip
            entry["met"] = entry["throughput_met"] and entry["p95_met"]
        out[config] = entry
    return out


def run(
    *,
    model: str = "resnet50",
    configs: Sequence[str] = CONFIGS,
    clients: int = 10,
    ratio: float = 0.01,
    seconds: float = 40.0,
    rounds: int = 2,
    warmup_s: float = 5.0,
    prime_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = small_jpeg()
    schedule = alternating(configs, rounds)
    measured: dict[str, list[Round]] = {c: [] for c in configs}
    envs: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        port = free_port()
        command = [sys.executable, "-m", "harness.otlp_receiver", "--port", str(port)]
        with ManagedProcess(command, env={}, log_path=log_dir / "receiver.log", port=port) as rx:
            rx.wait_ready(timeout_s=60)
            endpoint = rx.base_url
            # Before the rounds, on spans alone (the receiver's counts move; each round's
            # figures are differences).
            sdk = sdk_cost(endpoint, ratio)
            if prime_s > 0:  # the machine brought to the load before the first round counts
                envs["off"] = config_env("off", model, endpoint, ratio, env or {})
                with app_process(envs["off"], log_path=log_dir / "prime.log") as server:
                    server.wait_ready(timeout_s=600)
                    asyncio.run(counted_window(f"{server.base_url}/predict", body,
                                               clients=clients, warmup_s=0.0, seconds=prime_s,
                                               server_pid=server.pid))  # fmt: skip
            for i, config in enumerate(schedule):
                envs[config] = config_env(config, model, endpoint, ratio, env or {})
                r = measure_round(config, i, env=envs[config], body=body, clients=clients,
                                  seconds=seconds, warmup_s=warmup_s, receiver=rx,
                                  log_dir=log_dir)  # fmt: skip
                measured[config].append(r)
                print(f"round {i} {config}: {r.ok / r.duration_s:.2f} req/s, {r.spans} spans "
                      f"for {r.served} requests, load {r.load_1m}, others "
                      f"{r.others_cpu_s / r.duration_s:.2f} CPUs, steal "
                      f"{r.steal_s / r.duration_s:.2f}", file=sys.stderr)  # fmt: skip
    names = labels(ratio)
    rows = {c: pooled(c, measured[c], envs[c], names[c]) for c in configs}
    with_ratios(rows)
    return {
        "model": model,
        "clients": clients,
        "sampling_ratio": ratio,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "schedule": schedule,
        "warmup_s_per_round": warmup_s,
        "prime_s": prime_s,
        "request_bytes": len(body),
        "sdk_cost_us_per_request": sdk,
        "configs": list(rows.values()),
        "goals": goals(rows),
    }


def failed_claims(report: dict[str, Any]) -> list[str]:
    """What is wrong with a run as a measurement: failed requests, spans with tracing off, none
    at 100%, or a server that did not stop cleanly."""
    problems = []
    for row in report["configs"]:
        if row["failed"]:
            problems.append(f"{row['config']}: {row['failed']} failed: {row['failures']}")
        if not row["ok"]:
            problems.append(f"{row['config']}: no request answered in the window")
        if any(row["server_exit_codes"]):
            problems.append(f"{row['config']}: server exit codes {row['server_exit_codes']}")
        if row["config"] == "off" and row["spans_received"]:
            problems.append(f"off: {row['spans_received']} spans received with tracing off")
        if row["config"] == "always" and not row["spans_received"]:
            problems.append("always: no span received at 100%")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of off,sampled,always")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--ratio", type=float, default=0.01, help="the sampled configuration's")
    parser.add_argument("--seconds", type=float, default=40.0, help="per configuration per round")
    parser.add_argument("--rounds", type=int, default=2, help="the order reversed every other")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds per round, not counted")
    parser.add_argument(
        "--prime", type=float, default=30.0, help="seconds of unmeasured load before round one"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for every server, repeatable"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown configurations: {sorted(unknown)}")
    report = run(model=args.model, configs=configs, clients=args.clients, ratio=args.ratio,
                 seconds=args.seconds, rounds=args.rounds, warmup_s=args.warmup,
                 prime_s=args.prime,
                 env=dict(item.split("=", 1) for item in args.env))  # fmt: skip
    return publish(
        report, name="tracing", argv=argv, json_path=args.json, problems=failed_claims(report)
    )


if __name__ == "__main__":
    sys.exit(main())
