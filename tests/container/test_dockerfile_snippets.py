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


def builder_install(dockerfile: Dockerfile) -> str:
    [install] = [r.args for r in dockerfile.stage("builder").all("RUN") if "pip install" in r.args]
    return install


def builder_programs(dockerfile: Dockerfile) -> list[str]:
    programs = python_snippets(builder_install(dockerfile))
    # the CPU-build guard, the post-slimming forward pass
    assert len(programs) == 2, programs
    return programs


def lock_for(dockerfile: Dockerfile, index: str) -> subprocess.CompletedProcess[str]:
    """The builder's choice of lock for a TORCH_INDEX_URL, run by bash as the build runs it."""
    install = builder_install(dockerfile)
    choice = install[install.index('case "${TORCH_INDEX_URL}" in') : install.index("esac") + 4]
    return subprocess.run(
        ["bash", "-c", f'{choice} && echo "$lock"'],
        env={"TORCH_INDEX_URL": index, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_lock_follows_the_torch_index(dockerfile: Dockerfile) -> None:
    for index, lock in [
        ("https://download.pytorch.org/whl/cpu", "requirements/runtime-cpu.txt"),
        ("https://download.pytorch.org/whl/cpu/", "requirements/runtime-cpu.txt"),
        ("", "requirements/runtime-pypi.txt"),
    ]:
        result = lock_for(dockerfile, index)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == lock, index
        assert (ROOT / lock).is_file()
    # An index with no lock stops the build instead of installing unhashed or mismatched wheels.
    cuda = lock_for(dockerfile, "https://download.pytorch.org/whl/cu130")
    assert cuda.returncode == 1
    assert cuda.stdout == ""
    assert "no lock for TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130" in cuda.stderr


@pytest.mark.slow  # Python processes that import torch
def test_build_fails_when_the_cpu_index_gave_a_cuda_torch(dockerfile: Dockerfile) -> None:
    program = builder_programs(dockerfile)[0]
    cuda_here = torch.version.cuda is not None
    cpu = run_snippet(program, "https://download.pytorch.org/whl/cpu")
    assert cpu.returncode == (1 if cuda_here else 0), cpu.stdout + cpu.stderr
    # PyPI's torch (no index given) is accepted whatever build it is.
    pypi = run_snippet(program, "")
    assert pypi.returncode == 0, pypi.stderr
    assert "torch 2.11.0" in pypi.stdout


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
