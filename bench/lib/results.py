"""Where results go and how a benchmark writes one: JSON, with the command that made it and the
machine it ran on, so that every figure in docs/PERFORMANCE.md can be traced and re-run."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from bench.lib.machine import machine_info
from harness.process import ROOT

RESULTS = ROOT / "bench" / "results"


def command_line(module: str, argv: list[str] | None) -> str:
    """`python -m <module> <arguments>`: the command to record with a result (`argv` None:
    this process's own arguments)."""
    return f"python -m {module} " + shlex.join(argv if argv is not None else sys.argv[1:])


def write_result(path: Path, result: dict[str, Any]) -> Path:
    """`result` as indented JSON at `path` (its folder made if need be), with the machine it was
    measured on unless it holds its own `machine` already."""
    if "machine" not in result:
        result = {**result, "machine": machine_info()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def publish(
    report: dict[str, Any],
    *,
    name: str,
    argv: list[str] | None,
    json_path: Path | None,
    problems: list[str],
) -> int:
    """The end of a benchmark that checks claims: the command recorded in `report`, the report
    printed and written to `json_path` (when given), each failed claim on stderr prefixed by
    `name`; the exit status (1 when a claim failed)."""
    report["command"] = command_line(f"bench.{name}", argv)
    print(json.dumps(report, indent=2))
    if json_path:
        write_result(json_path, report)
    for problem in problems:
        print(f"{name}: {problem}", file=sys.stderr)
    return 1 if problems else 0
