"""The Python one-liners inside the Dockerfile, taken from it verbatim and run here: the parts of
the build and of the HEALTHCHECK that a static check cannot prove. (Docker itself runs only in
the workflow's build job.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from container.dockerkit import ROOT, Dockerfile


def python_snippets(command: str) -> list[str]:
    """Every `python -c "..."` program of a shell command, as the shell would pass it."""
    programs = []
    words = shlex.split(command)
    for i, word in enumerate(words[:-2]):
        if word == "python" and words[i + 1] == "-c":
            programs.append(words[i + 2])
    return programs


def run_snippet(
    program: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", program, *argv],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def builder_install(dockerfile: Dockerfile) -> list[str]:
    [install] = [r.args for r in dockerfile.stage("builder").all("RUN") if "pip install" in r.args]
    programs = python_snippets(install)
    # requirements from pyproject, the CPU-build guard, the post-slimming forward pass
    assert len(programs) == 3, programs
    return programs


def test_requirements_come_from_pyproject(dockerfile: Dockerfile) -> None:
    program = builder_install(dockerfile)[0]
    result = run_snippet(program)
    assert result.returncode == 0, result.stderr
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert result.stdout.splitlines() == pyproject["project"]["dependencies"]
    assert "torch==2.11.0" in result.stdout.splitlines()


@pytest.mark.slow  # Python processes that import torch
def test_build_fails_when_the_cpu_index_gave_a_cuda_torch(dockerfile: Dockerfile) -> None:
    program = builder_install(dockerfile)[1]
    cuda_here = torch.version.cuda is not None
    cpu = run_snippet(program, "https://download.pytorch.org/whl/cpu")
    assert cpu.returncode == (1 if cuda_here else 0), cpu.stdout + cpu.stderr
    # A CUDA index (or none) accepts whatever torch it got.
    cuda = run_snippet(program, "https://download.pytorch.org/whl/cu130")
    assert cuda.returncode == 0, cuda.stderr
    assert "torch 2.11.0" in cuda.stdout


def runtime_weights_check(dockerfile: Dockerfile, weights: str = "DEFAULT") -> str:
    [check] = [
        r.args for r in dockerfile.stage("runtime").all("RUN") if "resolve_weights" in r.args
    ]
    # The shell expands ${MODEL_NAME} and ${MODEL_WEIGHTS} (build args) inside the program.
    [program] = python_snippets(check)
    return program.replace("${MODEL_NAME}", "resnet50").replace("${MODEL_WEIGHTS}", weights)


@pytest.mark.slow  # Python processes that import torch
def test_build_fails_unless_the_app_finds_the_baked_weights(
    dockerfile: Dockerfile, tmp_path: Path
) -> None:
    program = runtime_weights_check(dockerfile)
    torch_home = tmp_path / "torch"
    missing = run_snippet(program, env={"TORCH_HOME": str(torch_home)})
    assert missing.returncode != 0
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet50-11ad3fa6.pth").write_bytes(b"stand-in")  # resolution only
    found = run_snippet(program, env={"TORCH_HOME": str(torch_home)})
    assert found.returncode == 0, found.stderr
    assert "weights ResNet50_Weights.IMAGENET1K_V2" in found.stdout
    # An image built with MODEL_WEIGHTS=random has nothing baked, and says so.
    random = run_snippet(
        runtime_weights_check(dockerfile, "random"), env={"TORCH_HOME": str(tmp_path / "none")}
    )
    assert random.returncode == 0, random.stderr
    assert "weights random None" in random.stdout


class HealthHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HealthHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_command_probes_health_on_serving_port(
    dockerfile: Dockerfile, health_server: ThreadingHTTPServer
) -> None:
    [check] = dockerfile.stage("runtime").all("HEALTHCHECK")
    command = check.exec_form()
    assert command is not None
    assert command[:2] == ["python", "-c"]
    port = str(health_server.server_address[1])
    healthy = run_snippet(command[2], env={"SERVING_PORT": port})
    assert healthy.returncode == 0, healthy.stderr
    # Another port (nothing listens) or a server without /health: unhealthy.
    health_server.shutdown()
    health_server.server_close()
    down = run_snippet(command[2], env={"SERVING_PORT": port})
    assert down.returncode != 0


def test_snippet_extraction() -> None:
    command = 'pip install x && python -c "import sys; print(sys.argv[1])" "${A}" && ls'
    assert python_snippets(command) == ["import sys; print(sys.argv[1])"]
    assert re.search(r"python -c", command)
