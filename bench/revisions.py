"""Two revisions of the server side by side: did a change cost throughput or latency?

Each revision is checked out into a temporary git worktree and served from there (`python -m
app` in that checkout, the same venv, the same settings), both started once and kept up; then
closed-loop rounds at the same client count alternate between them, A B B A ..., each server
idle before its round begins, so drift in a shared, noisy machine falls on both alike. The
result is each revision's rounds and the medians' ratios (B over A).

    python -m bench.revisions dbb622a HEAD --clients 10 --rounds 4 --seconds 20 \\
        --json bench/results/revisions-redesign.json

Revisions are anything `git rev-parse` takes; `WORKTREE` (the literal word) is the working tree
as it is, uncommitted changes included. `--head-env NAME=VALUE` (repeatable) adds settings to
B's server only, and `--head-ir` serves B from a build-time IR built for the model first, with
torch blocked (the cpu image's way; harness/without_torch.py):

    python -m bench.revisions 8b4b1bb WORKTREE --head-ir --json bench/results/revisions-ir.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.lib.images import small_jpeg
from bench.lib.load import run_load
from bench.lib.results import command_line, write_result
from bench.lib.rounds import alternating
from bench.lib.servers import build_ir, serving_env, wait_until_idle
from harness.process import ROOT, ManagedProcess, app_process

WORKTREE = "WORKTREE"


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextmanager
def checkout(revision: str, parent: Path) -> Iterator[tuple[Path, str]]:
    """The revision's files in a detached worktree under `parent` (removed afterwards), and its
    commit; the working tree itself for WORKTREE."""
    if revision == WORKTREE:
        yield ROOT, git("rev-parse", "--short", "HEAD") + "+worktree"
        return
    commit = git("rev-parse", "--short", revision)
    path = parent / commit
    git("worktree", "add", "--detach", str(path), commit)
    try:
        yield path, commit
    finally:
        git("worktree", "remove", "--force", str(path))


def round_order(rounds: int) -> list[int]:
    """A B B A A B B A ...: each revision as often first as second, so a trend over the run
    (a neighbour's load rising) does not favour one of them."""
    return alternating((0, 1), rounds)


def summary(rounds: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: round(statistics.median(r[key] for r in rounds), 2)
        for key in ("throughput_rps", "p50_ms", "p95_ms")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="revision A (e.g. the commit before a change)")
    parser.add_argument("head", nargs="?", default=WORKTREE, help="revision B (default: WORKTREE)")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per revision")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per round")
    parser.add_argument("--head-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--head-ir", action="store_true", help="B serves a build-time IR")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    head_env = dict(item.split("=", 1) for item in args.head_env)

    body = small_jpeg()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        parent = Path(tmp)
        servers: list[ManagedProcess] = []
        names = []
        for side, revision in enumerate((args.base, args.head)):
            path, commit = stack.enter_context(checkout(revision, parent))
            env = {**serving_env(args.model), "PYTHONPATH": str(path)}
            if side == 1:
                env.update(head_env)
                if args.head_ir:
                    ir = build_ir(args.model, parent / "ir", checkout=path)
                    env["SERVING_MODEL_DIR"] = str(ir)
            server = app_process(
                env,
                log_path=parent / f"{commit}.log",
                cwd=path,
                without_torch=side == 1 and args.head_ir,
            )
            stack.callback(server.terminate)
            server.start()
            servers.append(server)
            names.append(f"{revision} ({commit})")
        for server in servers:
            server.wait_ready(timeout_s=900)
        results: list[list[dict[str, Any]]] = [[], []]
        for index in round_order(args.rounds):
            for server in servers:
                wait_until_idle(server)
            load = asyncio.run(
                run_load(
                    servers[index].base_url + "/predict",
                    body,
                    content_type="image/jpeg",
                    concurrency=args.clients,
                    duration_s=args.seconds,
                )
            )
            row = {k: getattr(load, k) for k in ("throughput_rps", "p50_ms", "p95_ms", "failed")}
            results[index].append(row)
            print(f"{names[index]}: {row}", flush=True)

    a, b = summary(results[0]), summary(results[1])
    result = {
        "command": command_line("bench.revisions", argv),
        "model": args.model,
        "clients": args.clients,
        "seconds_per_round": args.seconds,
        "head_settings": {
            **head_env,
            **({"SERVING_MODEL_DIR": "(built IR)"} if args.head_ir else {}),
        },
        "revisions": [
            {"revision": names[0], "rounds": results[0], "median": a},
            {"revision": names[1], "rounds": results[1], "median": b},
        ],
        # B over A: throughput 1.0 = unchanged; latencies below 1.0 = B faster.
        "ratios": {key: round(b[key] / a[key], 3) if a[key] else None for key in a},
    }
    print(result["ratios"])
    if args.json:
        write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
