"""The tests' process harness: a real `python -m app` (or any server) over a real socket, and
one-shot runs of the app or a benchmark to completion.

The long-running part (a process in its own group on a free loopback port, its output in a log
file, ready once its /ready answers 200, stopped by SIGTERM then SIGKILL) is harness/process.py,
the same code the benchmarks start their servers with; it lives outside tests/ because the
benchmarks may not import the tests, nor the tests the benchmarks. Tests import it from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from harness.process import ROOT, ManagedProcess, app_command, app_process, free_port

__all__ = [
    "ROOT",
    "ManagedProcess",
    "app_command",
    "app_process",
    "free_port",
    "json_log",
    "run_app",
    "run_module",
]


def run_module(
    module: str, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m module args...` from the repository root, to the end; output captured.
    `env` is the whole environment (default: this process's)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def run_app(env: Mapping[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m app` with exactly these SERVING_ settings (none inherited from the caller's
    environment) on a free loopback port, to the end: for start-ups that must fail."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    where = {
        "SERVING_HOST": "127.0.0.1",
        "SERVING_PORT": str(free_port()),
        "SERVING_GRPC_PORT": str(free_port()),
    }
    return run_module("app", env={**inherited, **where, **env}, timeout_s=timeout_s)


def json_log(text: str) -> list[dict[str, Any]]:
    """Every non-blank line of a JSON log as a record; a line that is not JSON fails the test
    (the stream must stay machine-readable)."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return records
