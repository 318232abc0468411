"""The shell and Python pieces of the Dockerfile, taken from it verbatim and run here: the parts
of the build and of the HEALTHCHECK that a static check cannot prove. (Docker itself runs only
in the workflow's build jobs.)"""

from __future__ import annotations

import importlib.util
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

from app.model.ir.manifest import IR_PRECISIONS
from app.model.options import Precision
from container.dockerkit import ROOT, Dockerfile, Instruction

VENV_BIN = str(Path(sys.executable).parent)
# Prepended to a program: torch and torchvision cannot be imported, and find_spec finds neither,
# as in the cpu image.
WITHOUT_TORCH = "import sys; sys.modules.update(torch=None, torchvision=None)\n"


def python_snippets(command: str) -> list[str]:
    """Every `python -c "..."` program of a shell command, as the shell would pass it."""
    programs = []
    words = shlex.split(command)
    for i, word in enumerate(words[:-2]):
        if word == "python" and words[i + 1] == "-c":
            programs.append(words[i + 2])
    return programs


def run_snippet(
    program: str, *argv: str, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", program, *argv],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_bash(
    script: str, env: dict[str, str], cwd: Path = ROOT, timeout: int = 30
) -> subprocess.CompletedProcess[str]:
    """A piece of a RUN, as the stages' SHELL runs it (bash -o pipefail), the venv first on PATH."""
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def the_run(dockerfile: Dockerfile, stage: str, word: str) -> Instruction:
    [run] = [r for r in dockerfile.stage(stage).all("RUN") if word in r.args]
    return run


def case_of(run: Instruction, variable: str) -> str:
    """The RUN's `case "${VARIABLE}" in ... esac`."""
    body = run.body()
    start = body.index(f'case "${{{variable}}}" in')
    return body[start : body.index("esac", start) + 4]


# --- the converter's choices -----------------------------------------------------------------


def lock_for(dockerfile: Dockerfile, index: str) -> subprocess.CompletedProcess[str]:
    """The converter's choice of lock for a TORCH_INDEX_URL, run by bash as the build runs it."""
    choice = case_of(the_run(dockerfile, "convert", "pip install"), "TORCH_INDEX_URL")
    return run_bash(f'{choice} && echo "$lock"', {"TORCH_INDEX_URL": index})


def test_the_converters_lock_follows_the_torch_index(dockerfile: Dockerfile) -> None:
    for index, lock in [
        ("https://download.pytorch.org/whl/cpu", "requirements/build-cpu.txt"),
        ("https://download.pytorch.org/whl/cpu/", "requirements/build-cpu.txt"),
        ("", "requirements/build-pypi.txt"),
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


def ir_for(dockerfile: Dockerfile, precision: str) -> subprocess.CompletedProcess[str]:
    """The converter's IR precision for a MODEL_PRECISION, run by bash as the build runs it."""
    choice = case_of(the_run(dockerfile, "convert", "app.model.ir.build"), "MODEL_PRECISION")
    return run_bash(f'{choice} && echo "$ir"', {"MODEL_PRECISION": precision})


def test_model_precision_picks_the_irs_precision(dockerfile: Dockerfile) -> None:
    # Every precision the app accepts builds an IR: int8 a quantized one, the rest fp32 (the
    # CPU picks bf16 or fp32 at start-up); each is one the IR builder writes.
    expected = {"auto": "fp32", "fp32": "fp32", "bf16": "fp32", "int8": "int8"}
    assert set(expected) == {p.value for p in Precision}
    for precision, ir in expected.items():
        result = ir_for(dockerfile, precision)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == ir, precision
        assert ir in IR_PRECISIONS
    for other in ("fp16", "", "INT8"):
        refused = ir_for(dockerfile, other)
        assert refused.returncode == 1, other
        assert refused.stdout == ""
        assert f"MODEL_PRECISION={other}: auto, fp32, bf16 or int8" in refused.stderr


# --- the cpu target ------------------------------------------------------------------------


def cpu_programs(dockerfile: Dockerfile) -> tuple[str, str]:
    """The cpu target's build-time proofs: torch absent, and the app serves the IR."""
    no_torch, serves = python_snippets(the_run(dockerfile, "cpu", "compileall").body())
    assert "find_spec('torch')" in no_torch
    assert "ModelHost" in serves
    return no_torch, serves


def test_the_cpu_build_fails_where_torch_is_importable(dockerfile: Dockerfile) -> None:
    no_torch, _ = cpu_programs(dockerfile)
    assert importlib.util.find_spec("torch") is not None  # this venv has it
    here = run_snippet(no_torch)
    assert here.returncode != 0
    assert "torch in the cpu image" in here.stderr
    gone = run_snippet(WITHOUT_TORCH + no_torch)
    assert gone.returncode == 0, gone.stderr


def slimmed_site(tmp_path: Path) -> Path:
    """A site-packages holding this venv's openvino file for file (empty files), what a 3.11
    venv's ensurepip brings, and a package with a test suite."""
    import openvino

    source = Path(openvino.__file__).parent
    site = tmp_path / "site-packages"
    for path in source.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            target = site / "openvino" / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    for name in (
        "setuptools/__init__.py",
        "pkg_resources/__init__.py",
        "_distutils_hack/__init__.py",
        "distutils-precedence.pth",
        "numpy/_core/tests/test_multiarray.py",
        "numpy/_core/multiarray.py",
    ):
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).touch()
    return site


def module_imports(init: Path) -> list[str]:
    """The unconditional `from openvino... import ...` of a module, as dotted module names."""
    names = []
    text = init.read_text()
    for module, imported in re.findall(r"^from (openvino[\w.]*) import (\w+)", text, re.M):
        # `from openvino import frontend`: a submodule; `from openvino.x import Name`: module x.
        names.append(f"{module}.{imported}" if module == "openvino" else module)
    return names


def importable(site: Path, module: str) -> bool:
    """A package, a .py module, or (a submodule of) an extension module in the tree."""
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        path = site.joinpath(*parts[:end])
        if any(path.parent.glob(f"{path.name}.*.so")):
            return True  # `openvino._pyopenvino.frontend`: the extension defines its submodules
        if end == len(parts):
            return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()
        if not (path / "__init__.py").is_file():
            return False
    return False


def test_the_cpu_venvs_slimming_keeps_what_serves_an_ir(
    dockerfile: Dockerfile, tmp_path: Path
) -> None:
    """The slimming commands of cpu-deps, run as they are on a copy of the locked openvino's
    file tree: what goes, what stays, and that the `ls` proof at their end passes."""
    import openvino

    install = the_run(dockerfile, "cpu-deps", "pip install").body()
    slimming = install[install.index("site=$(python -c ") :]
    slimming, found = re.subn(r'^site=\$\(python -c "[^"]*"\)', 'site="$FAKE_SITE"', slimming)
    assert found == 1
    site = slimmed_site(tmp_path)
    before = {p.name for p in (site / "openvino" / "libs").iterdir()}
    # `python -m pip uninstall` of setuptools (with its .dist-info: a scanner would otherwise
    # report a package that is not there), then of pip, is the only python left to run;
    # anything else fails the test. The fake removes what the real uninstall would.
    fake_python = (
        'python() { case "$*" in\n'
        '  "-m pip uninstall --yes --quiet setuptools") rm -rf "$FAKE_SITE"/setuptools '
        '"$FAKE_SITE"/pkg_resources "$FAKE_SITE"/_distutils_hack '
        '"$FAKE_SITE"/distutils-precedence.pth "$FAKE_SITE"/setuptools-*.dist-info ;;\n'
        '  "-m pip uninstall --yes --quiet pip") ;;\n'
        "  *) exit 99 ;;\n"
        "esac; }"
    )
    result = run_bash(
        f'set -eu\n[ -d "$FAKE_SITE" ]\n{fake_python}\n{slimming}',
        {"FAKE_SITE": str(site)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "libopenvino_ir_frontend.so." in result.stdout  # the `ls` at the end

    ov = site / "openvino"
    after = {p.name for p in (ov / "libs").iterdir()}
    frontends = {n.split("_frontend")[0] for n in after if "_frontend.so" in n}
    assert frontends == {"libopenvino_ir"}
    assert len([n for n in before if "_frontend.so" in n]) == 8
    plugins = {n for n in after if n.endswith("_plugin.so")}
    assert "libopenvino_intel_cpu_plugin.so" in plugins
    assert not {n for n in plugins if "gpu" in n or "npu" in n}
    assert {"libopenvino_intel_gpu_plugin.so", "libopenvino_intel_npu_plugin.so"} <= before
    assert any(n.startswith("libopenvino.so.") for n in after)
    assert any(n.startswith("libtbb.so") for n in after)
    assert "cache.json" not in after
    for gone in ("include", "cmake", "tools", "torch"):
        assert (ov / gone).is_dir() is False, gone
    assert {p.name for p in (ov / "frontend").iterdir() if p.is_dir()} == set()
    for gone in ("setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth"):
        assert not (site / gone).exists(), gone
    assert not (site / "numpy" / "_core" / "tests").exists()
    assert (site / "numpy" / "_core" / "multiarray.py").is_file()
    # `import openvino` needs nothing that went: every unconditional import of the package and
    # of its frontend package is still there (the convert_model import is conditional).
    source = Path(openvino.__file__).parent
    for init in (source / "__init__.py", source / "frontend" / "__init__.py"):
        modules = module_imports(init)
        assert "openvino._pyopenvino" in modules
        missing = [m for m in modules if not importable(site, m)]
        assert missing == [], init
    assert not importable(site, "openvino.tools.ovc")


@pytest.mark.slow  # resnet18 converted to IR with torch, then served by OpenVINO: ~25 s
def test_the_cpu_image_serves_what_the_converter_built_without_torch(
    dockerfile: Dockerfile, tmp_path: Path
) -> None:
    """The converter's RUN (resnet18, random weights) writes the IR; the cpu target's proof,
    with torch made unimportable and the target's own SERVING_* ENV, serves it; with a
    precision the IR was not built for, it refuses."""
    build = the_run(dockerfile, "convert", "app.model.ir.build").body()
    out = tmp_path / "model"
    script = (
        build.replace("/opt/model", str(out))
        .replace("/context/weights", str(tmp_path / "weights"))
        .replace("PYTHONPATH=/context ", f"PYTHONPATH={ROOT} ")
    )
    assert "/context" not in script
    args = {"MODEL_NAME": "resnet18", "MODEL_WEIGHTS": "random", "MODEL_PRECISION": "auto"}
    built = run_bash(script, {**args, "TORCH_HOME": str(tmp_path / "torch")}, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (out / "manifest.json").is_file()

    _, serves = cpu_programs(dockerfile)

    def serve(**build_args: str) -> subprocess.CompletedProcess[str]:
        env = {}
        for name, value in dockerfile.env("cpu").items():
            if name.startswith("SERVING_"):
                for arg, given in build_args.items():
                    value = value.replace(f"${{{arg}}}", given)
                env[name] = value.replace("/opt/model", str(out))
        assert "$" not in "".join(env.values()), env
        return run_snippet(WITHOUT_TORCH + serves, env=env, timeout=180)

    served = serve(**args)
    assert served.returncode == 0, served.stderr
    assert "serves HostStatus(" in served.stdout
    assert "model='resnet18'" in served.stdout
    assert "backend='openvino'" in served.stdout
    assert "model_source='ir'" in served.stdout
    refused = serve(**(args | {"MODEL_PRECISION": "int8"}))
    assert refused.returncode != 0
    assert "SERVING_PRECISION=int8, the IR is fp32" in refused.stderr


# --- the gpu target --------------------------------------------------------------------------


@pytest.mark.slow  # a Python process that imports torch and runs resnet18
def test_the_gpu_venvs_forward_pass_proof_runs(dockerfile: Dockerfile) -> None:
    install = the_run(dockerfile, "gpu-deps", "pip install").body()
    [program] = python_snippets(install[install.rindex("&& python -c") + 3 :])
    result = run_snippet(program)
    assert result.returncode == 0, result.stderr
    assert "torch 2.11.0" in result.stdout
    assert "forward (1, 1000)" in result.stdout


def gpu_weights_check(dockerfile: Dockerfile, weights: str = "DEFAULT") -> str:
    check = the_run(dockerfile, "gpu", "resolve_weights").body()
    # The shell expands ${MODEL_NAME} and ${MODEL_WEIGHTS} (build args) inside the program.
    [program] = python_snippets(check)
    return program.replace("${MODEL_NAME}", "resnet50").replace("${MODEL_WEIGHTS}", weights)


@pytest.mark.slow  # Python processes that import torch
def test_the_gpu_build_fails_unless_the_app_finds_the_baked_weights(
    dockerfile: Dockerfile, tmp_path: Path
) -> None:
    program = gpu_weights_check(dockerfile)
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
        gpu_weights_check(dockerfile, "random"), env={"TORCH_HOME": str(tmp_path / "none")}
    )
    assert random.returncode == 0, random.stderr
    assert "weights random None" in random.stdout


# --- both targets ----------------------------------------------------------------------------


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


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_healthcheck_command_probes_health_on_serving_port(
    dockerfile: Dockerfile, health_server: ThreadingHTTPServer, target: str
) -> None:
    [check] = dockerfile.all(target, "HEALTHCHECK")
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
