"""Markdown tables for docs/PERFORMANCE.md, generated from the JSON in bench/results/, so the
document cannot drift from the measurements (tests/test_bench.py compares them).

    python -m bench.report            # print every section
    python -m bench.report --write    # rewrite the generated sections of docs/PERFORMANCE.md

What each section shows is data, at the end of this module: FILE_SECTIONS (a section made from
one result file) and RUN_SECTIONS (a row per result file: one benchmark run several ways), the
columns of each table (a header and a format string over the row's fields, or a function where a
cell needs arithmetic) and TARGETS, the rows of the targets tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.lib.results import RESULTS
from harness.process import ROOT

DOC = ROOT / "docs" / "PERFORMANCE.md"
MARKER = re.compile(
    r"<!-- bench:(?P<name>[a-z0-9-]+):start -->\n.*?<!-- bench:(?P=name):end -->", re.S
)
NOT_MEASURED = "(not measured yet)\n"

# Benchmarks that moved after their results were recorded: a recorded command is shown as it
# runs now (the result files are history and stay as they were written).
MOVED = {
    "bench.explore_paths": "bench.experiments.explore_paths",
    "bench.openvino_hints": "bench.experiments.openvino_hints",
}

Row = dict[str, Any]
# A table column: its header, and its cell as a format string over the row's fields
# ("{burst[accepted]}") or as a function of the row.
Column = tuple[str, str | Callable[[Row], object]]


def command(data: Row) -> str:
    """The command that made a result, with the module's current name."""
    text: str = data["command"]
    for old, new in MOVED.items():
        text = text.replace(f"python -m {old} ", f"python -m {new} ")
    return text


def load(name: str) -> Row | None:
    path = RESULTS / name
    if not path.is_file():
        return None
    data: Row = json.loads(path.read_text())
    return data


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cells(columns: Iterable[Column], row: Row) -> list[object]:
    return [cell.format(**row) if isinstance(cell, str) else cell(row) for _, cell in columns]


def columns_table(columns: tuple[Column, ...], rows: Iterable[Row]) -> str:
    return table([header for header, _ in columns], [cells(columns, row) for row in rows])


def isa(machine: Row) -> str:
    """What decides the model's speed on this CPU."""
    if machine.get("amx"):
        return "AMX"
    return "AVX512-BF16" if machine.get("avx512_bf16") else "no native bf16"


def machine_line(report: Row) -> str:
    m = report["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    openvino = f", OpenVINO {m['openvino'].split('-')[0]}" if m.get("openvino") else ""
    loads = [r["load_1m"] for r in report.get("e2e", []) if "load_1m" in r]
    load = (
        f" Load average (1 min) on the machine during the sweep: {min(loads):g} to {max(loads):g}."
        if loads
        else ""
    )
    return (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa(m)}{gpu}), "
        f"torch {m['torch']}{openvino}, model {report['model']}, random weights (same FLOPs), "
        f"{report['duration_s_per_point']:g} s per point. Command: `{command(report)}`."
        f"{load}\n"
    )


def point(r: Row | None) -> str:
    """One configuration at one client count, in the sweep's table."""
    if r is None:
        return ""
    failed = f", **{r['failed']} failed**" if r["failed"] else ""
    if r["ok"] == 0:  # no latency to show: say so rather than print 0 ms
        return f"**no answer within the {r['duration_s']:g} s**{failed}"
    latency = f"p50 {r['p50_ms']:.0f} / p95 {r['p95_ms']:.0f} ms"
    return f"{r['throughput_rps']:.1f} rps, {latency}{failed}"


def sweep(report: Row) -> str:
    """A configuration per row, a client count per column; then each one's start-up."""
    configs = list(dict.fromkeys(r["config"] for r in report["e2e"]))
    levels = sorted({r["concurrency"] for r in report["e2e"]})
    by = {(r["config"], r["concurrency"]): r for r in report["e2e"]}
    rows = [[config, *(point(by.get((config, level))) for level in levels)] for config in configs]
    out = (
        machine_line(report)
        + "\n"
        + table(["configuration", *[f"{c} clients" for c in levels]], rows)
    )
    ready = {r["config"]: r for r in report["e2e"] if "ready_s" in r}
    if ready:
        out += "\n" + columns_table(READY_COLUMNS, ready.values())
    return out


def ceilings(report: Row) -> str:
    return columns_table(CEILING_COLUMNS, report["ceiling"])


def preprocess(report: Row) -> str:
    return columns_table(PREPROCESS_COLUMNS, report["preprocess"])


@dataclass(frozen=True)
class Target:
    """A row of the targets table, shown where the run recorded `key`. `label` and `measured`
    are format strings over the recorded fields; `aim` shows where the run judged the target
    (its record holds `met`)."""

    key: str
    label: str
    aim: str
    measured: str


MARK = {True: "met", False: "**not met**"}


def targets(report: Row) -> str:
    t = report["targets"]
    rows: list[list[Any]] = []
    for target in TARGETS:
        x = t.get(target.key)
        if x is None:
            continue
        judged = "met" in x
        rows.append(
            [
                target.label.format(**x),
                target.aim if judged else "",
                target.measured.format(**x),
                MARK[x["met"]] if judged else "",
            ]
        )
    failures = ", ".join(f"{k}: {v}" for k, v in t["failures_by_concurrency"].items())
    rows.append(
        [
            "failed requests at 10 / 32 / 64 clients",
            "0",
            failures or "n/a",
            MARK[t["no_failures_at_10_32_64"]],
        ]
    )
    head = f"Best configuration at 10 clients: **{t['best_config']}**.\n\n"
    if "judged_config" in t:
        head = (
            f"Judged: **{t['judged_config']}** (what a user gets without setting anything); "
            f"best at 10 clients in this run: {t['best_config']}.\n\n"
        )
    return head + table(["target", "aim", "measured", ""], rows)


def overload(runs: list[Row]) -> str:
    """The burst figures of each variant of the overload benchmark."""
    return f"Command: `{command(runs[0])}` (variants add `--env`).\n\n" + columns_table(
        OVERLOAD_COLUMNS, runs
    )


def rolling(runs: list[Row]) -> str:
    return columns_table(ROLLING_COLUMNS, runs)


def soak(data: Row) -> str:
    """From the first sample after the first minute (the warm-up) to the last."""
    first = next(s for s in data["samples"] if s["t_s"] >= 60)
    return columns_table(SOAK_COLUMNS, [{**data, "first": first, "last": data["samples"][-1]}])


def explore(data: Row) -> str:
    rows = [
        [r["path"], "", "", "", "", f"fails here: {r['error']}"]
        if "error" in r
        else cells(EXPLORE_COLUMNS, r)
        for r in data["rows"]
    ]
    return (
        f"Command: `{command(data)}` (torch {data['torch']}, {data['threads']} threads).\n\n"
        + table([header for header, _ in EXPLORE_COLUMNS], rows)
    )


def openvino_hints(data: Row) -> str:
    return (
        f"Command: `{command(data)}` ({data['model']}, {data['precision']}, "
        f"{data['cpu']}, OpenVINO {data['openvino'].split('-')[0]}).\n\n"
        + columns_table(OPENVINO_HINTS_COLUMNS, data["rows"])
    )


def oip_compare(report: Row) -> str:
    """bench/oip_compare.py: the protocol's paths next to /predict on one server, one run."""
    m, server = report["machine"], report["server"]
    loads = [x for r in report["rows"] for x in r["load_1m"]]
    turn = report["seconds_per_point"] / report["rounds"]
    head = (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa(m)}), "
        f"model {report['model']} on {server['backend']} {server['dtype']}, random weights; "
        f"{report['seconds_per_point']:g} s per point in {report['rounds']} turns of {turn:g} s "
        f"(after {report['warmup_s_per_round']:g} s of warm-up each), the paths' order rotated "
        f"every turn. Command: `{command(report)}`. Load average (1 min) on the machine: "
        f"{min(loads):g} to {max(loads):g}.\n\n"
    )
    us = report["parse_us"]
    parse = (
        "\nParsing each body needs before the image is in hand, in process (median): "
        f"binary extension's JSON header {us['v2_binary_json_header']:g} µs; plain JSON "
        f"{us['v2_json_body']:g} µs for the body plus {us['v2_json_base64_image']:g} µs of "
        f"base64 decoding; gRPC's protobuf {us['grpc_protobuf_request']:g} µs; /predict none.\n"
    )
    rows = sorted(report["rows"], key=lambda r: r["concurrency"])
    return head + columns_table(OIP_COLUMNS, rows) + parse


def cache(report: Row) -> str:
    """bench/cache.py: cache off, in process and through Redis, one run, rounds alternated."""
    m, w = report["machine"], report["workload"]
    loads = [x for r in report["configs"] for x in r["load_1m"]]
    order = " ".join(report["schedule"])
    head = (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa(m)}), "
        f"model {report['model']}, random weights, defaults otherwise; {report['clients']} "
        f"clients, {w['images']} distinct JPEGs ({w['bytes_min'] / 1024:.0f} to "
        f"{w['bytes_max'] / 1024:.0f} KiB, median {w['bytes_median'] / 1024:.0f} KiB), "
        f"{report['seconds_per_round']:g} s per configuration per round, rounds {order}, each "
        f"from an empty cache after {report['warmup_s_per_round']:g} s of `no-store` warm-up "
        f"(not counted). Command: `{command(report)}`. Load average (1 min) on the machine: "
        f"{min(loads):g} to {max(loads):g}.\n\n"
    )
    return head + columns_table(CACHE_COLUMNS, report["configs"]) + "\n" + cache_goals(report)


def cache_goals(report: Row) -> str:
    g = report["goals"]
    rows = []
    for config, name in (("local", "in process"), ("redis", "through Redis")):
        if f"speedup_{config}" in g:
            s = g[f"speedup_{config}"]
            rows.append([f"throughput vs cache off, {name}", f">= {s['goal']:g}x",
                         f"{s['ratio']:.2f}x (free hits: {s['ceiling_free_hits']:.2f}x; CPU per "
                         f"request predicts {s['cpu_ratio']:.2f}x)",
                         "met" if s["met"] else "**not met**"])  # fmt: skip
    for config, name in (("local", "in process"), ("redis", "through Redis on loopback")):
        if f"hit_ms_{config}" in g:
            h = g[f"hit_ms_{config}"]
            rows.append([f"a hit, server-side (p50 under the load), {name}", f"<= {h['goal']:g} ms",
                         f"{h['p50']:.2f} ms (p95 {h['p95']:.2f}; quiet p50 {h['quiet_p50']:.2f})",
                         "met" if h["met"] else "**not met**"])  # fmt: skip
    return table(["goal", "aim", "measured", ""], rows)


def tracing(report: Row) -> str:
    """bench/tracing.py: tracing off, sampled and at 100%, one run, rounds alternated."""
    m = report["machine"]
    loads = [x for r in report["configs"] for x in r["load_1m"]]
    head = (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa(m)}), "
        f"model {report['model']}, random weights, the prediction cache off; "
        f"{report['clients']} clients, closed loop, the {report['request_bytes'] / 1000:.0f} KB "
        f"JPEG; {report['seconds_per_round']:g} s per configuration per round after "
        f"{report['warmup_s_per_round']:g} s of warm-up (not counted), rounds "
        f"{' '.join(report['schedule'])}, a fresh server each, the first after "
        f"{report['prime_s']:g} s of the same load on a server not measured. "
        f"Command: `{command(report)}`. "
        f"Load average (1 min) on the machine: {min(loads):g} to {max(loads):g}.\n\n"
    )
    sdk = report["sdk_cost_us_per_request"]
    cost = (
        f"\nIn process, on spans shaped as one request's ({sdk['spans_per_request']:g} spans, "
        f"{sdk['bytes_per_request']:.0f} bytes of protobuf per request; `sdk_cost` in "
        f"bench/tracing.py), CPU per request: recording {sdk['record_us']:.0f} µs at 100% and "
        f"{sdk['record_us_sampled']:.0f} µs at {sdk['sampling_ratio']:.0%}, encoding "
        f"{sdk['encode_us']:.0f} µs, the exporter's whole export (encoding and the POST) "
        f"{sdk['export_us']:.0f} µs.\n"
    )
    table_ = columns_table(TRACING_COLUMNS, report["configs"])
    return head + table_ + "\n" + tracing_goals(report) + cost


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def tracing_goals(report: Row) -> str:
    g = report["goals"]
    rows = []
    names = {"sampled": f"{report['sampling_ratio']:.0%} sampled", "always": "100%"}
    for config in ("sampled", "always"):
        if config not in g:
            continue
        e = g[config]
        off, this = e["off_round_spread"], e["round_spread"]
        aims = (
            (f">= {e['throughput_goal']:.0%}", e["throughput_met"], f"<= {e['p95_goal']:.0%}",
             e["p95_met"])
            if config == "sampled"
            else ("(the cost: no goal)", None, "(the cost: no goal)", None)
        )  # fmt: skip
        for what, value, key, aim, met in (
            ("throughput", e["throughput_vs_off"], "throughput", aims[0], aims[1]),
            ("client p95", e["p95_vs_off"], "p95", aims[2], aims[3]),
        ):
            verdict = "" if met is None else "met" if met else "**not met**"
            rows.append([f"{what} vs off, {names[config]}", aim, percent(value),
                         f"{percent(off[key])} / {percent(this[key])}",
                         verdict])  # fmt: skip
    header = ["goal", "aim", "measured", "noise: spread between rounds, off / this", ""]
    return table(header, rows)


def rounds_rps(side: Row) -> str:
    """A configuration's pooled throughput and each round's."""
    rounds = ", ".join(f"{x:.1f}" for x in side["round_rps"])
    return f"{side['throughput_rps']:.1f} ({rounds})"


def router(report: Row) -> str:
    """bench/router.py: the app called directly and through the chart's nginx router, one run,
    rounds alternated at each client count."""
    m = report["machine"]
    prime = (
        f"the first after {report['prime_s']:g} s of load through the router not measured"
        if report["prime_s"]
        else "no unmeasured load before the first"
    )
    head = (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa(m)}), "
        f"model {report['model']}, random weights, the prediction cache off; the router "
        f"rendered with `--set {' --set '.join(report['router_values'])}`; closed loop, the "
        f"{report['request_bytes'] / 1000:.0f} KB JPEG; {report['seconds_per_round']:g} s per "
        f"configuration per round after {report['warmup_s_per_round']:g} s of warm-up (not "
        f"counted), rounds {' '.join(report['schedule'])} at each client count, {prime}. "
        f"Command: `{command(report)}`.\n\n"
    )
    return head + columns_table(ROUTER_COLUMNS, report["results"])


def shadow(report: Row) -> str:
    """bench/shadow.py: one server copying 0%, 10% and 100% of /predict to a second one, one
    run, rounds alternated."""
    m = report["machine"]
    loads = [x for r in report["configs"] for x in r["load_1m"]]
    head = (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa(m)}), "
        f"model {report['model']}, random weights, the prediction cache off on both servers; "
        f"{report['clients']} clients, closed loop, the {report['request_bytes'] / 1000:.0f} KB "
        f"JPEG; `SERVING_SHADOW_CONCURRENCY={report['shadow_concurrency']}`; "
        f"{report['seconds_per_round']:g} s per configuration per round after "
        f"{report['warmup_s_per_round']:g} s of warm-up (not counted), rounds "
        f"{' '.join(report['schedule'])}, a fresh server each, one target for the whole run. "
        f"Command: `{command(report)}`. "
        f"Load average (1 min) on the machine: {min(loads):g} to {max(loads):g}.\n\n"
    )
    return head + columns_table(SHADOW_COLUMNS, report["configs"])


def per_served(r: Row, *results: str) -> float:
    """Copies with these results per /predict the server answered over its rounds."""
    return sum(r["copies"][k] for k in results) / r["served"] if r["served"] else 0.0


def pair(key: str, digits: int = 1) -> Callable[[Row], str]:
    """A row's p50 / p95 of one timing, or a dash where it has none."""

    def cell(r: Row) -> str:
        stats = r
        for part in key.split("."):
            stats = stats[part]
        return f"{stats['p50']:.{digits}f} / {stats['p95']:.{digits}f}" if stats["n"] else "-"

    return cell


def ratio(key: str) -> Callable[[Row], str]:
    return lambda r: "" if r[key] is None else f"{r[key]:.2f}x"


def other_outcomes(r: Row) -> str:
    """What the burst got besides 200 and 503 with Retry-After."""
    burst = r["burst"]
    outcomes = dict(burst["other"])
    if burst.get("timed_out"):
        outcomes["504 (deadline passed in the queue)"] = burst["timed_out"]
    if burst.get("refused_without_retry_after"):
        outcomes["503 without Retry-After"] = burst["refused_without_retry_after"]
    return ", ".join(f"{k}: {v}" for k, v in outcomes.items()) or "none"


# --- what each section shows ------------------------------------------------------------------

TARGETS = (
    Target("rps_at_10", "throughput at 10 clients", ">= 140 req/s", "{value:.1f} req/s"),
    Target("p50_ms_at_1", "p50 latency at 1 client", "<= 15 ms", "{value:.1f} ms"),
    Target(
        "throughput_vs_pipeline_ceiling_at_10",
        "throughput at 10 clients vs the in-process end-to-end ceiling "
        "(decode + preprocess + model, no HTTP)",
        ">= 85%",
        "{ratio:.0%} of {ceiling_img_s} img/s",
    ),
    Target(
        "throughput_vs_model_ceiling_at_10",
        "throughput at 10 clients vs the model alone, in process",
        "",
        "{ratio:.0%} of {ceiling_img_s} img/s",
    ),
    Target(
        "throughput_vs_baseline_at_10",
        "throughput at 10 clients vs the plain baseline",
        "4x",
        "{ratio}x",
    ),
    Target(
        "throughput_vs_torchserve_at_10",
        "throughput at 10 clients vs TorchServe's best in this run "
        "({torchserve_config}, {torchserve_rps:.1f} req/s)",
        "6x",
        "{ratio}x",
    ),
    # Recorded by earlier sweeps (the H200 run): the fastest ceiling of any backend.
    Target(
        "throughput_vs_ceiling_at_10",
        "throughput at 10 clients vs the fastest in-process ceiling on this device",
        "85%",
        "{ratio:.0%} of {ceiling_img_s} img/s",
    ),
    Target("p95_ms_at_10", "p95 latency at 10 clients", "100 ms (aim)", "{value:.0f} ms"),
    Target(
        "p50_at_1_vs_model_batch1",
        "p50 at 1 client vs the model's own batch-1 latency",
        "within 10%",  # judged by earlier sweeps (the H200 run) only
        "{ratio}x of {model_batch1_ms} ms",
    ),
    Target(
        "p50_at_1_vs_baseline_p50_at_1",
        "p50 at 1 client vs the baseline's (same HTTP + decode work)",
        "",
        "{ratio}x",
    ),
)

READY_COLUMNS: tuple[Column, ...] = (
    ("configuration", "{config}"),
    ("process start to /ready", "{ready_s:.1f} s"),
    ("RSS when ready", "{rss_ready_mb:.0f} MB"),
)

CEILING_COLUMNS: tuple[Column, ...] = (
    ("backend", "{backend}"),
    (
        "measures",
        lambda r: "decode + preprocess + model" if r.get("kind") == "pipeline" else "model",
    ),
    ("threads", "{threads}"),
    ("batch", "{batch_size}"),
    ("ms per batch (median)", "{median_batch_ms:.1f}"),
    ("images/s", "{images_per_s:.1f}"),
)

PREPROCESS_COLUMNS: tuple[Column, ...] = (
    ("image", "{image}"),
    ("size", lambda r: f"{r['bytes'] / 1024:.0f} KiB"),
    ("JPEG draft decoding", lambda r: "yes" if r["draft"] else "no"),
    ("decode + preprocess, ms (median)", "{median_ms:.1f}"),
)

OVERLOAD_COLUMNS: tuple[Column, ...] = (
    ("server", "{label}"),
    ("sustainable rps", "{sustainable[throughput_rps]:.1f}"),
    ("offered rps (3x)", "{burst[offered_rps]:.0f}"),
    ("accepted", "{burst[accepted]}"),
    ("refused (503)", "{burst[refused]}"),
    ("other outcomes", other_outcomes),
    (
        "p95 accepted, client (server)",
        lambda r: (
            f"{r['burst']['accepted_p95_ms'] / 1000:.2f} s "
            f"({r['burst']['accepted_server_p95_ms'] / 1000:.2f} s)"
        ),
    ),
    ("p95 refusal", "{burst[refused_p95_ms]:.0f} ms"),
    ("RSS before -> peak", "{burst[rss_before_mb]:.0f} -> {burst[rss_peak_mb]:.0f} MB"),
    ("back to 90%", lambda r: "n/a" if r["recovery_s"] is None else f"{r['recovery_s']:.0f} s"),
)

ROLLING_COLUMNS: tuple[Column, ...] = (
    ("run", "{label}"),
    ("replicas", "{replicas}"),
    ("clients", "{clients}"),
    ("requests", "{requests}"),
    ("failed", "{failed}"),
    ("exit codes", lambda r: ", ".join(str(c) for c in r["replica_exit_codes"])),
    ("command", lambda r: f"`{command(r)}`"),
)

SOAK_COLUMNS: tuple[Column, ...] = (
    ("requests", lambda r: r["load"]["ok"] + r["load"]["failed"]),
    ("failed", "{load[failed]}"),
    ("throughput", "{load[throughput_rps]:.1f} rps"),
    ("RSS after warm-up -> end", "{first[rss_mb]:.0f} -> {last[rss_mb]:.0f} MB"),
    ("RSS growth", "{rss_growth:.1%}"),
    ("open fds", "{first[fds]:.0f} -> {last[fds]:.0f}"),
    ("fd growth", "{fd_growth:.1%}"),
    ("command", lambda r: f"`{command(r)}`"),
)

EXPLORE_COLUMNS: tuple[Column, ...] = (
    ("path", "{path}"),
    ("batch 1, img/s", "{b1_img_s:.1f}"),
    ("batch 8, img/s", "{b8_img_s:.1f}"),
    ("build + warm-up", "{build_s:.0f} s"),
    ("max logit diff vs fp32", "{max_logit_diff_vs_fp32:.3f}"),
    ("accuracy", lambda r: "top-1 kept" if r["top1_agrees"] else "**top-1 changed**"),
)

OPENVINO_HINTS_COLUMNS: tuple[Column, ...] = (
    ("hint", "{hint}"),
    ("streams", "{streams}"),
    ("threads", "{threads}"),
    ("batch", "{batch_size}"),
    ("requests in flight", "{in_flight}"),
    ("images/s", "{images_per_s:.1f}"),
)

OIP_COLUMNS: tuple[Column, ...] = (
    ("path", "{label}"),
    ("clients", "{concurrency}"),
    ("req/s", "{throughput_rps:.1f}"),
    ("vs /predict", ratio("throughput_vs_predict")),
    ("p50 / p95", "{p50_ms:.0f} / {p95_ms:.0f} ms"),
    ("server CPU per request", "{server_cpu_ms_per_request:.1f} ms"),
    ("vs /predict", ratio("server_cpu_vs_predict")),
    ("client CPU per request", "{client_cpu_ms_per_request:.1f} ms"),
    ("request", lambda r: f"{r['request_bytes'] / 1024:.0f} KiB"),
    ("failed", "{failed}"),
)

CACHE_COLUMNS: tuple[Column, ...] = (
    ("configuration", "{label}"),
    ("req/s (rounds)", lambda r: f"{r['throughput_rps']:.1f} ("
     + ", ".join(f"{x:.1f}" for x in r["round_rps"]) + ")"),
    ("client p50 / p95, ms", "{p50_ms:.0f} / {p95_ms:.0f}"),
    ("repeats", "{repeat_fraction:.1%}"),
    ("hit ratio: X-Cache / metrics", lambda r: f"{r['hit_ratio']:.1%} / "
     + ("-" if r["metrics_hit_ratio"] is None else f"{r['metrics_hit_ratio']:.1%}")),
    ("coalesced", "{coalesced}"),
    ("hit `total` p50 / p95, ms", pair("hit_total_ms", 2)),
    ("hit `cache` p50 / p95, ms", pair("hit_cache_ms", 2)),
    ("quiet hit `total` p50 / p95, ms", pair("quiet.hit_total_ms", 2)),
    ("miss `total` p50 / p95, ms", pair("miss_total_ms", 0)),
    ("CPU ms per request: server + client + Redis", lambda r: " + ".join(
        f"{r['cpu_ms_per_request'][k]:.1f}" for k in ("server", "client", "redis"))),
    ("failed", "{failed}"),
)  # fmt: skip

TRACING_COLUMNS: tuple[Column, ...] = (
    ("configuration", "{label}"),
    ("req/s (rounds)", lambda r: f"{r['throughput_rps']:.1f} ("
     + ", ".join(f"{x:.1f}" for x in r["round_rps"]) + ")"),
    ("vs off", lambda r: percent(r["throughput_vs_off"])),
    ("client p50 / p95, ms", "{p50_ms:.0f} / {p95_ms:.0f}"),
    ("p50 / p95 vs off", lambda r: f"{percent(r['p50_vs_off'])} / {percent(r['p95_vs_off'])}"),
    ("spans received per request", "{spans_per_request:.2f}"),
    ("bytes exported per request", "{export_bytes_per_request:.0f}"),
    ("spans dropped", "{spans_dropped}"),
    ("CPU ms per request: server + client; receiver", lambda r: "{server:.1f} + {client:.1f}; "
     "{receiver:.2f}".format(**r["cpu_ms_per_request"])),
    ("other processes / steal, CPUs (rounds)", lambda r: ", ".join(
        f"{o:.2f} / {st:.2f}" for o, st in zip(r["round_others_cpus"], r["round_steal_cpus"],
                                                strict=True))),
    ("failed", "{failed}"),
)  # fmt: skip

ROUTER_COLUMNS: tuple[Column, ...] = (
    ("clients", "{clients}"),
    ("direct req/s (rounds)", lambda r: rounds_rps(r["direct"])),
    ("router req/s (rounds)", lambda r: rounds_rps(r["router"])),
    ("router / direct", lambda r: percent(r["throughput_ratio"])),
    ("direct client p50 / p95, ms", "{direct[p50_ms]:.1f} / {direct[p95_ms]:.1f}"),
    ("router client p50 / p95, ms", "{router[p50_ms]:.1f} / {router[p95_ms]:.1f}"),
    ("p50 / p95 added, ms", "{p50_added_ms:+.1f} / {p95_added_ms:+.1f}"),
    ("CPU ms per request, direct: app + client", "{direct[cpu_ms_per_request][app]:.1f} + "
     "{direct[cpu_ms_per_request][client]:.1f}"),
    ("CPU ms per request, router: app + nginx + client", "{router[cpu_ms_per_request][app]:.1f} + "
     "{router[cpu_ms_per_request][nginx]:.2f} + {router[cpu_ms_per_request][client]:.1f}"),
    ("failed: direct / router", "{direct[failed]} / {router[failed]}"),
)  # fmt: skip

SHADOW_COLUMNS: tuple[Column, ...] = (
    ("copied (`SERVING_SHADOW_PERCENT`)", "{config}"),
    ("req/s (rounds)", rounds_rps),
    ("vs 0%", lambda r: percent(r["throughput_vs_0"])),
    ("client p50 / p95, ms", "{p50_ms:.0f} / {p95_ms:.0f}"),
    ("p50 / p95 vs 0%", lambda r: f"{percent(r['p50_vs_0'])} / {percent(r['p95_vs_0'])}"),
    ("copies per request: sent / compared", lambda r: f"{r['copies_per_request']:.2f} / "
     f"{per_served(r, 'agree', 'disagree'):.2f}"),
    ("agree / disagree / error / dropped", "{copies[agree]:.0f} / {copies[disagree]:.0f} / "
     "{copies[error]:.0f} / {copies[dropped]:.0f}"),
    ("/predict answered by the target", "{target_answered}"),
    ("CPU ms per request: server + client; target", "{cpu_ms_per_request[server]:.1f} + "
     "{cpu_ms_per_request[client]:.1f}; {cpu_ms_per_request[target]:.1f}"),
    ("failed", "{failed}"),
)  # fmt: skip

THREAD_VARIANTS = (
    "defaults (every CPU to torch, model threads niced by 10)",
    "model threads at HTTP's priority (`SERVING_MODEL_THREAD_NICENESS=0`)",
    "one torch thread (`SERVING_NUM_THREADS=1`)",
)

# Sections made from one result file: (the file, what the section makes of it).
FILE_SECTIONS: dict[str, tuple[str, Callable[[Row], str]]] = {
    "cpu-sweep": ("run_all.json", sweep),
    "cpu-targets": ("run_all.json", targets),
    "cpu-ceilings": ("run_all.json", ceilings),
    "cpu-preprocess": ("run_all.json", preprocess),
    "peers-sweep": ("run_all-peers.json", sweep),
    "peers-targets": ("run_all-peers.json", targets),
    "gpu-sweep": ("run_all-h200.json", sweep),
    "gpu-targets": ("run_all-h200.json", targets),
    "gpu-ceilings": ("run_all-h200.json", ceilings),
    "gpu-preprocess": ("run_all-h200.json", preprocess),
    "soak": ("soak.json", soak),
    "explore": ("explore_paths.json", explore),
    "openvino-hints": ("openvino_hints.json", openvino_hints),
    "batching": ("batching.json", sweep),
    "oip-compare": ("oip_compare.json", oip_compare),
    "cache": ("cache.json", cache),
    "tracing": ("tracing.json", tracing),
    "router": ("router.json", router),
    "shadow": ("shadow.json", shadow),
}

# Sections with a row per result file, the same benchmark run several ways: ((file, the row's
# label), ...) and what the section makes of the rows (each the file's fields and its `label`).
OVERLOAD_FILES = ("overload.json", "overload-niceness0.json", "overload-1thread.json")
THREADS_FILES = ("threads-resnet18-default.json", "threads-resnet18-niceness0.json",
                 "threads-resnet18-1thread.json")  # fmt: skip
ROLLING_RUNS = (
    ("rolling.json", "strict proxy (no retries), SIGTERM right after leaving the upstream"),
    ("rolling-abrupt.json", "abrupt: SIGTERM while still in the upstream, recommended retries"),
)
RUN_SECTIONS: dict[str, tuple[tuple[tuple[str, str], ...], Callable[[list[Row]], str]]] = {
    "overload": (tuple(zip(OVERLOAD_FILES, THREAD_VARIANTS, strict=True)), overload),
    "threads": (tuple(zip(THREADS_FILES, THREAD_VARIANTS, strict=True)), overload),
    "rolling": (ROLLING_RUNS, rolling),
}


def render(name: str) -> str:
    if name in FILE_SECTIONS:
        source, build = FILE_SECTIONS[name]
        data = load(source)
        return build(data) if data is not None else NOT_MEASURED
    runs, build_rows = RUN_SECTIONS[name]
    rows = [
        {**data, "label": label} for source, label in runs if (data := load(source)) is not None
    ]
    return build_rows(rows) if rows else NOT_MEASURED


def rewrite(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        return f"<!-- bench:{name}:start -->\n{render(name)}<!-- bench:{name}:end -->"

    return MARKER.sub(replace, text)


def write_doc() -> None:
    """docs/PERFORMANCE.md with its generated sections rewritten from bench/results/."""
    DOC.write_text(rewrite(DOC.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.write:
        write_doc()
        return 0
    for name in [*FILE_SECTIONS, *RUN_SECTIONS]:
        print(f"## {name}\n\n{render(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
