"""Markdown tables for docs/PERFORMANCE.md, generated from the JSON in bench/results/, so the
document cannot drift from the measurements (tests/test_bench.py compares them).

    python -m bench.report            # print every section
    python -m bench.report --write    # rewrite the generated sections of docs/PERFORMANCE.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from bench.lib.results import RESULTS
from harness.process import ROOT

DOC = ROOT / "docs" / "PERFORMANCE.md"
MARKER = re.compile(
    r"<!-- bench:(?P<name>[a-z0-9-]+):start -->\n.*?<!-- bench:(?P=name):end -->", re.S
)


# Benchmarks that moved after their results were recorded: a recorded command is shown as it
# runs now (the result files are history and stay as they were written).
MOVED = {
    "bench.explore_paths": "bench.experiments.explore_paths",
    "bench.openvino_hints": "bench.experiments.openvino_hints",
}


def command(data: dict[str, Any]) -> str:
    """The command that made a result, with the module's current name."""
    text: str = data["command"]
    for old, new in MOVED.items():
        text = text.replace(f"python -m {old} ", f"python -m {new} ")
    return text


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_line(report: dict[str, Any]) -> str:
    m = report["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    isa = "AMX" if m.get("amx") else ("AVX512-BF16" if m.get("avx512_bf16") else "no native bf16")
    openvino = f", OpenVINO {m['openvino'].split('-')[0]}" if m.get("openvino") else ""
    loads = [r["load_1m"] for r in report.get("e2e", []) if "load_1m" in r]
    load = (
        f" Load average (1 min) on the machine during the sweep: {min(loads):g} to {max(loads):g}."
        if loads
        else ""
    )
    return (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa}{gpu}), "
        f"torch {m['torch']}{openvino}, model {report['model']}, random weights (same FLOPs), "
        f"{report['duration_s_per_point']:g} s per point. Command: `{command(report)}`."
        f"{load}\n"
    )


def sweep(report: dict[str, Any]) -> str:
    configs = list(dict.fromkeys(r["config"] for r in report["e2e"]))
    levels = sorted({r["concurrency"] for r in report["e2e"]})
    by = {(r["config"], r["concurrency"]): r for r in report["e2e"]}
    rows = []
    for config in configs:
        cells = [config]
        for level in levels:
            r = by.get((config, level))
            if r is None:
                cells.append("")
                continue
            failed = f", **{r['failed']} failed**" if r["failed"] else ""
            if r["ok"] == 0:  # no latency to show: say so rather than print 0 ms
                cells.append(f"**no answer within the {r['duration_s']:g} s**{failed}")
                continue
            latency = f"p50 {r['p50_ms']:.0f} / p95 {r['p95_ms']:.0f} ms"
            cells.append(f"{r['throughput_rps']:.1f} rps, {latency}{failed}")
        rows.append(cells)
    out = (
        machine_line(report)
        + "\n"
        + table(["configuration", *[f"{c} clients" for c in levels]], rows)
    )
    ready = {r["config"]: r for r in report["e2e"] if "ready_s" in r}
    if ready:
        out += "\n" + table(
            ["configuration", "process start to /ready", "RSS when ready"],
            [[c, f"{r['ready_s']:.1f} s", f"{r['rss_ready_mb']:.0f} MB"] for c, r in ready.items()],
        )
    return out


def ceilings(report: dict[str, Any]) -> str:
    rows = [
        [
            r["backend"],
            "decode + preprocess + model" if r.get("kind") == "pipeline" else "model",
            r["threads"],
            r["batch_size"],
            f"{r['median_batch_ms']:.1f}",
            f"{r['images_per_s']:.1f}",
        ]
        for r in report["ceiling"]
    ]
    return table(
        ["backend", "measures", "threads", "batch", "ms per batch (median)", "images/s"], rows
    )


def targets(report: dict[str, Any]) -> str:
    t = report["targets"]
    rows: list[list[Any]] = []
    mark = {True: "met", False: "**not met**"}
    if "rps_at_10" in t:
        x = t["rps_at_10"]
        rows.append(["throughput at 10 clients", ">= 140 req/s", f"{x['value']:.1f} req/s",
                     mark[x["met"]]])  # fmt: skip
    if "p50_ms_at_1" in t:
        x = t["p50_ms_at_1"]
        rows.append(["p50 latency at 1 client", "<= 15 ms", f"{x['value']:.1f} ms",
                     mark[x["met"]]])  # fmt: skip
    if "throughput_vs_pipeline_ceiling_at_10" in t:
        x = t["throughput_vs_pipeline_ceiling_at_10"]
        rows.append(
            [
                "throughput at 10 clients vs the in-process end-to-end ceiling "
                "(decode + preprocess + model, no HTTP)",
                ">= 85%",
                f"{x['ratio'] * 100:.0f}% of {x['ceiling_img_s']} img/s",
                mark[x["met"]],
            ]
        )
    if "throughput_vs_model_ceiling_at_10" in t:
        x = t["throughput_vs_model_ceiling_at_10"]
        rows.append(
            [
                "throughput at 10 clients vs the model alone, in process",
                "",
                f"{x['ratio'] * 100:.0f}% of {x['ceiling_img_s']} img/s",
                "",
            ]
        )
    if "throughput_vs_baseline_at_10" in t:
        x = t["throughput_vs_baseline_at_10"]
        rows.append(
            [
                "throughput at 10 clients vs the plain baseline",
                "4x",
                f"{x['ratio']}x",
                mark[x["met"]],
            ]
        )
    if "throughput_vs_torchserve_at_10" in t:
        x = t["throughput_vs_torchserve_at_10"]
        rows.append(
            [
                "throughput at 10 clients vs TorchServe's best in this run "
                f"({x['torchserve_config']}, {x['torchserve_rps']:.1f} req/s)",
                "6x",
                f"{x['ratio']}x",
                mark[x["met"]],
            ]
        )
    if "throughput_vs_ceiling_at_10" in t:
        x = t["throughput_vs_ceiling_at_10"]
        rows.append(
            [
                "throughput at 10 clients vs the fastest in-process ceiling on this device",
                "85%",
                f"{x['ratio'] * 100:.0f}% of {x['ceiling_img_s']} img/s",
                mark[x["met"]],
            ]
        )
    if "p95_ms_at_10" in t:
        x = t["p95_ms_at_10"]
        rows.append(
            ["p95 latency at 10 clients", "100 ms (aim)", f"{x['value']:.0f} ms", mark[x["met"]]]
        )
    if "p50_at_1_vs_model_batch1" in t:
        x = t["p50_at_1_vs_model_batch1"]
        rows.append(
            [
                "p50 at 1 client vs the model's own batch-1 latency",
                "within 10%" if "met" in x else "",
                f"{x['ratio']}x of {x['model_batch1_ms']} ms",
                mark[x["met"]] if "met" in x else "",
            ]
        )
    if "p50_at_1_vs_baseline_p50_at_1" in t:
        x = t["p50_at_1_vs_baseline_p50_at_1"]
        rows.append(
            [
                "p50 at 1 client vs the baseline's (same HTTP + decode work)",
                "",
                f"{x['ratio']}x",
                "",
            ]
        )
    failures = ", ".join(f"{k}: {v}" for k, v in t["failures_by_concurrency"].items())
    rows.append(
        [
            "failed requests at 10 / 32 / 64 clients",
            "0",
            failures or "n/a",
            mark[t["no_failures_at_10_32_64"]],
        ]
    )
    head = f"Best configuration at 10 clients: **{t['best_config']}**.\n\n"
    if "judged_config" in t:
        head = (
            f"Judged: **{t['judged_config']}** (what a user gets without setting anything); "
            f"best at 10 clients in this run: {t['best_config']}.\n\n"
        )
    return head + table(["target", "aim", "measured", ""], rows)


def preprocess(report: dict[str, Any]) -> str:
    rows = [
        [
            r["image"],
            f"{r['bytes'] / 1024:.0f} KiB",
            "yes" if r["draft"] else "no",
            f"{r['median_ms']:.1f}",
        ]
        for r in report["preprocess"]
    ]
    return table(["image", "size", "JPEG draft decoding", "decode + preprocess, ms (median)"], rows)


VARIANTS = (
    ("default", "defaults (every CPU to torch, model threads niced by 10)"),
    ("niceness0", "model threads at HTTP's priority (`SERVING_MODEL_THREAD_NICENESS=0`)"),
    ("1thread", "one torch thread (`SERVING_NUM_THREADS=1`)"),
)


def overload_table(files: dict[str, str]) -> str:
    """The burst figures of each thread variant: `files` maps a variant to its result file."""
    variants = [(files[key], label) for key, label in VARIANTS]
    rows = []
    shown = ""
    for name, label in variants:
        data = load(name)
        if data is None:
            continue
        b, s = data["burst"], data["sustainable"]
        shown = shown or command(data)
        outcomes = dict(b["other"])
        if b.get("timed_out"):
            outcomes["504 (deadline passed in the queue)"] = b["timed_out"]
        if b.get("refused_without_retry_after"):
            outcomes["503 without Retry-After"] = b["refused_without_retry_after"]
        other = ", ".join(f"{k}: {v}" for k, v in outcomes.items()) or "none"
        rows.append(
            [
                label,
                f"{s['throughput_rps']:.1f}",
                f"{b['offered_rps']:.0f}",
                b["accepted"],
                b["refused"],
                other,
                f"{b['accepted_p95_ms'] / 1000:.2f} s ({b['accepted_server_p95_ms'] / 1000:.2f} s)",
                f"{b['refused_p95_ms']:.0f} ms",
                f"{b['rss_before_mb']:.0f} -> {b['rss_peak_mb']:.0f} MB",
                "n/a" if data["recovery_s"] is None else f"{data['recovery_s']:.0f} s",
            ]
        )
    header = [
        "server",
        "sustainable rps",
        "offered rps (3x)",
        "accepted",
        "refused (503)",
        "other outcomes",
        "p95 accepted, client (server)",
        "p95 refusal",
        "RSS before -> peak",
        "back to 90%",
    ]
    if not rows:
        return "(not measured yet)\n"
    return f"Command: `{shown}` (variants add `--env`).\n\n" + table(header, rows)


def overload(_: dict[str, Any] | None = None) -> str:
    files = {"default": "overload.json", "niceness0": "overload-niceness0.json",
             "1thread": "overload-1thread.json"}  # fmt: skip
    return overload_table(files)


def threads(_: dict[str, Any] | None = None) -> str:
    return overload_table({key: f"threads-resnet18-{key}.json" for key, _ in VARIANTS})


def rolling(_: dict[str, Any] | None = None) -> str:
    rows = []
    for name, label in (
        ("rolling.json", "strict proxy (no retries), SIGTERM right after leaving the upstream"),
        ("rolling-abrupt.json", "abrupt: SIGTERM while still in the upstream, recommended retries"),
    ):
        data = load(name)
        if data is None:
            continue
        rows.append(
            [
                label,
                data["replicas"],
                data["clients"],
                data["requests"],
                data["failed"],
                ", ".join(str(c) for c in data["replica_exit_codes"]),
                f"`{command(data)}`",
            ]
        )
    return table(
        ["run", "replicas", "clients", "requests", "failed", "exit codes", "command"], rows
    )


def soak(_: dict[str, Any] | None = None) -> str:
    data = load("soak.json")
    if data is None:
        return "(not measured yet)\n"
    load_result = data["load"]
    first = next(s for s in data["samples"] if s["t_s"] >= 60)
    last = data["samples"][-1]
    return table(
        [
            "requests",
            "failed",
            "throughput",
            "RSS after warm-up -> end",
            "RSS growth",
            "open fds",
            "fd growth",
            "command",
        ],
        [
            [
                load_result["ok"] + load_result["failed"],
                load_result["failed"],
                f"{load_result['throughput_rps']:.1f} rps",
                f"{first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB",
                f"{data['rss_growth'] * 100:.1f}%",
                f"{first['fds']:.0f} -> {last['fds']:.0f}",
                f"{data['fd_growth'] * 100:.1f}%",
                f"`{command(data)}`",
            ]
        ],
    )


def explore(_: dict[str, Any] | None = None) -> str:
    data = load("explore_paths.json")
    if data is None:
        return "(not measured yet)\n"
    rows = []
    for r in data["rows"]:
        if "error" in r:
            rows.append([r["path"], "", "", "", "", f"fails here: {r['error']}"])
            continue
        rows.append(
            [
                r["path"],
                f"{r['b1_img_s']:.1f}",
                f"{r['b8_img_s']:.1f}",
                f"{r['build_s']:.0f} s",
                f"{r['max_logit_diff_vs_fp32']:.3f}",
                "top-1 kept" if r["top1_agrees"] else "**top-1 changed**",
            ]
        )
    return (
        f"Command: `{command(data)}` (torch {data['torch']}, {data['threads']} threads).\n\n"
        + table(
            [
                "path",
                "batch 1, img/s",
                "batch 8, img/s",
                "build + warm-up",
                "max logit diff vs fp32",
                "accuracy",
            ],
            rows,
        )
    )


def openvino_hints(_: dict[str, Any] | None = None) -> str:
    data = load("openvino_hints.json")
    if data is None:
        return "(not measured yet)\n"
    rows = [
        [
            r["hint"],
            r["streams"],
            r["threads"],
            r["batch_size"],
            r["in_flight"],
            f"{r['images_per_s']:.1f}",
        ]
        for r in data["rows"]
    ]
    return (
        f"Command: `{command(data)}` ({data['model']}, {data['precision']}, "
        f"{data['cpu']}, OpenVINO {data['openvino'].split('-')[0]}).\n\n"
        + table(["hint", "streams", "threads", "batch", "requests in flight", "images/s"], rows)
    )


def batching(_: dict[str, Any] | None = None) -> str:
    data = load("batching.json")
    if data is None:
        return "(not measured yet)\n"
    return sweep(data)


def oip_compare(report: dict[str, Any]) -> str:
    """bench/oip_compare.py: the protocol's paths next to /predict on one server, one run."""
    m, server = report["machine"], report["server"]
    isa = "AMX" if m.get("amx") else ("AVX512-BF16" if m.get("avx512_bf16") else "no native bf16")
    loads = [x for r in report["rows"] for x in r["load_1m"]]
    turn = report["seconds_per_point"] / report["rounds"]
    head = (
        f"Measured {m['date'][:10]} on {m['cpu']} ({m['cpus_available']} CPUs, {isa}), "
        f"model {report['model']} on {server['backend']} {server['dtype']}, random weights; "
        f"{report['seconds_per_point']:g} s per point in {report['rounds']} turns of {turn:g} s "
        f"(after {report['warmup_s_per_round']:g} s of warm-up each), the paths' order rotated "
        f"every turn. Command: `{command(report)}`. Load average (1 min) on the machine: "
        f"{min(loads):g} to {max(loads):g}.\n\n"
    )

    def ratio(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}x"

    rows = [
        [
            r["label"],
            r["concurrency"],
            f"{r['throughput_rps']:.1f}",
            ratio(r["throughput_vs_predict"]),
            f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} ms",
            f"{r['server_cpu_ms_per_request']:.1f} ms",
            ratio(r["server_cpu_vs_predict"]),
            f"{r['client_cpu_ms_per_request']:.1f} ms",
            f"{r['request_bytes'] / 1024:.0f} KiB",
            r["failed"],
        ]
        for r in sorted(report["rows"], key=lambda r: r["concurrency"])
    ]
    header = ["path", "clients", "req/s", "vs /predict", "p50 / p95", "server CPU per request",
              "vs /predict", "client CPU per request", "request", "failed"]  # fmt: skip
    us = report["parse_us"]
    parse = (
        "\nParsing each body needs before the image is in hand, in process (median): "
        f"binary extension's JSON header {us['v2_binary_json_header']:g} µs; plain JSON "
        f"{us['v2_json_body']:g} µs for the body plus {us['v2_json_base64_image']:g} µs of "
        f"base64 decoding; gRPC's protobuf {us['grpc_protobuf_request']:g} µs; /predict none.\n"
    )
    return head + table(header, rows) + parse


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
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
    "overload": ("", overload),
    "threads": ("", threads),
    "rolling": ("", rolling),
    "soak": ("", soak),
    "explore": ("", explore),
    "openvino-hints": ("", openvino_hints),
    "batching": ("", batching),
    "oip-compare": ("oip_compare.json", oip_compare),
}


def render(name: str) -> str:
    source, build = SECTIONS[name]
    if not source:
        return build({})
    data = load(source)
    return build(data) if data is not None else "(not measured yet)\n"


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
    for name in SECTIONS:
        print(f"## {name}\n\n{render(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
