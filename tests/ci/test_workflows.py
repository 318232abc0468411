"""The GitHub Actions workflow, checked here (it runs for real on GitHub): actionlint clean,
every action pinned by commit SHA, least-privilege permissions, timeouts, concurrency, the test
job running exactly the commands of .ci/run, both image targets (cpu, gpu) built, sized and
smoke-tested, the CPU image published for amd64 and arm64, push and deploy only from main, the
e2e job running the one e2e suite (tests/e2e) on kind. And the build and publish jobs' shell
and Python helpers, run here against a fake `docker`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.tools import tool

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
ACTIONS = ROOT / ".github" / "actions"
PINNED_USES = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+(\.\d+){0,2}\b")
MAIN_PUSH = "github.event_name == 'push'"
ON_MAIN = "github.ref == 'refs/heads/main'"


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return load(CI)


def jobs(workflow: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = workflow["jobs"]
    return result


def run_steps(job: dict[str, Any]) -> list[str]:
    return [str(step["run"]).strip() for step in job["steps"] if "run" in step]


def uses_lines() -> list[tuple[Path, str]]:
    files = sorted(WORKFLOWS.glob("*.y*ml")) + sorted(ACTIONS.glob("*/action.y*ml"))
    assert files
    found = []
    for path in files:
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(.+)$", line)
            if match:
                found.append((path, match.group(1).strip()))
    return found


def ci_run_commands() -> list[str]:
    """The commands of .ci/run, without comments, `set` and `cd`."""
    commands = []
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(("set ", "cd ")):
            continue
        commands.append(line)
    return commands


# --- pins, permissions, limits ---------------------------------------------------------------


def test_every_action_is_pinned_by_commit_sha_with_its_version() -> None:
    lines = uses_lines()
    remote = 0
    for path, value in lines:
        ref, _, comment = value.partition("#")
        ref = ref.strip()
        if ref.startswith("./"):
            assert (ROOT / ref / "action.yml").is_file(), f"{path.name}: {ref}"
            continue
        remote += 1
        assert PINNED_USES.match(ref), f"{path.name}: {ref} is not pinned by a 40-hex SHA"
        assert VERSION_COMMENT.search("#" + comment), f"{path.name}: {ref} has no # vX.Y.Z"
    assert remote >= 10


def action_steps() -> list[tuple[str, dict[str, Any]]]:
    """(file name, step) of every step that uses an action, in workflows and local actions."""
    steps: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        for job in load(path)["jobs"].values():
            steps += [(path.name, step) for step in job["steps"] if "uses" in step]
    for path in sorted(ACTIONS.glob("*/action.y*ml")):
        steps += [(path.name, s) for s in load(path)["runs"]["steps"] if "uses" in s]
    return steps


def test_every_action_input_exists_in_that_action() -> None:
    """actionlint cannot check `with:` of SHA-pinned actions: check it against their inputs."""
    recorded = load(ROOT / "tests" / "ci" / "fixtures" / "action-inputs.yaml")
    checked = 0
    for name, step in action_steps():
        ref = str(step["uses"])
        if ref.startswith("./"):
            continue
        repo = ref.split("@")[0]
        assert repo in recorded, f"{name}: record {repo}'s inputs in fixtures/action-inputs.yaml"
        given = set(step.get("with", {}))
        known = set(recorded[repo]["inputs"])
        assert given <= known, f"{name}: {repo} has no input {sorted(given - known)}"
        missing = set(recorded[repo]["required"]) - given
        assert not missing, f"{name}: {repo} needs {sorted(missing)}"
        checked += 1
    assert checked >= 20


PUBLISH_JOBS = ("publish", "publish-gpu")


def test_permissions_are_read_only_except_publishing_packages(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in jobs(workflow).items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{name}: no explicit permissions"
        writes = {scope for scope, level in permissions.items() if level == "write"}
        expected = {"packages"} if name in PUBLISH_JOBS else set()
        assert writes == expected, f"{name} writes {writes}"
        assert set(permissions.values()) <= {"read", "write", "none"}


# The e2e suite waits on an HPA scaling out and back in and on an alert firing and resolving;
# the GPU image's cold build downloads and installs gigabytes of CUDA libraries.
TIMEOUT_LIMITS = {"e2e": 40, "build-gpu": 40}


def test_every_job_has_a_timeout(workflow: dict[Any, Any]) -> None:
    for name, job in jobs(workflow).items():
        limit = TIMEOUT_LIMITS.get(name, 30)
        assert 0 < int(job.get("timeout-minutes", 0)) <= limit, f"{name}: timeout-minutes"


def test_concurrency_cancels_stale_pr_runs_and_never_a_deploy(workflow: dict[Any, Any]) -> None:
    group = workflow["concurrency"]["group"]
    assert "github.ref" in group
    assert "pull_request.number" in group
    assert "pull_request" in str(workflow["concurrency"]["cancel-in-progress"])
    deploy = jobs(workflow)["deploy"]["concurrency"]
    assert deploy == {"group": "deploy-production", "cancel-in-progress": False}


def test_triggers(workflow: dict[Any, Any]) -> None:
    # PyYAML reads the key `on` as True.
    on = workflow["on"] if "on" in workflow else workflow[True]
    assert on["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert on["pull_request"] == {"branches": ["main"]}


# --- jobs ------------------------------------------------------------------------------------


def test_test_job_runs_exactly_the_commands_of_ci_run(workflow: dict[Any, Any]) -> None:
    commands = ci_run_commands()
    # .ci/run may end with scripts/e2e.sh (the e2e suite on a local cluster it starts as root):
    # on GitHub that is the e2e job, the same suite on kind (the e2e tests below).
    expected = commands[:-1] if commands[-1:] == ["scripts/e2e.sh"] else commands
    assert expected == ["scripts/install.sh", "scripts/test.sh"], commands
    test = jobs(workflow)["test"]
    project_commands = [
        cmd for cmd in run_steps(test) if cmd.split()[0].startswith(("scripts/", ".ci/"))
    ]
    assert project_commands == expected
    # Nothing else in the job runs tests or linters on the side.
    others = [cmd for cmd in run_steps(test) if cmd not in expected]
    for cmd in others:
        assert not re.search(r"\b(pytest|ruff|mypy)\b", cmd), cmd
    # The README's test command is that same script.
    readme = (ROOT / "README.md").read_text()
    assert "scripts/test.sh" in readme
    assert "scripts/install.sh" in readme


def test_test_job_has_pip_tool_and_weights_caches(workflow: dict[Any, Any]) -> None:
    setup = load(ACTIONS / "setup" / "action.yml")
    steps = setup["runs"]["steps"]
    python = next(s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python"))
    assert python["with"]["cache"] == "pip"
    assert any(s.get("with", {}).get("path") == ".tools" for s in steps)
    test = jobs(workflow)["test"]
    assert test["steps"][1]["uses"] == "./.github/actions/setup"
    weights = [s for s in test["steps"] if "torch" in str(s.get("with", {}).get("path", ""))]
    assert weights, "the real weights are not cached: real_weights tests would skip"
    assert workflow["env"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_lint_job_runs_every_linter(workflow: dict[Any, Any]) -> None:
    commands = "\n".join(run_steps(jobs(workflow)["lint"]))
    for needle in (
        "ruff check",
        "ruff format --check",
        "mypy",
        "hadolint Dockerfile",
        "actionlint",
        "helm lint charts/resnet-serving -f values-dev.yaml",
        "helm lint charts/resnet-serving -f values-prod.yaml",
        "helm lint charts/resnet-serving -f values-prod.yaml -f values-gpu.yaml",
    ):
        assert needle in commands, needle


PUSH_CONDITION = (MAIN_PUSH, ON_MAIN, "refs/tags/v")


def builds(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if "build-push-action" in str(s.get("uses", ""))]


def test_image_is_pushed_only_from_main_or_a_version_tag(workflow: dict[Any, Any]) -> None:
    all_jobs = jobs(workflow)
    for name in ("build", "build-gpu"):
        [bake] = builds(all_jobs[name])
        assert bake["with"]["push"] is False
        assert bake["with"]["load"] is True
        assert "type=gha" in bake["with"]["cache-from"]
        assert bake["with"]["cache-to"].startswith("type=gha")
    for name, job in all_jobs.items():
        for step in job["steps"]:
            text = str(step.get("run", "")) + str(step.get("uses", ""))
            pushes = step.get("with", {}).get("push") not in (None, False)
            if "docker push" in text or "login-action" in text or pushes:
                assert name in PUBLISH_JOBS, f"{name} pushes or logs in"
                condition = step.get("if", "")
                for needle in PUSH_CONDITION:
                    assert needle in condition, condition
    for name, suffix in (("publish", None), ("publish-gpu", "-gpu")):
        meta = next(
            s for s in all_jobs[name]["steps"] if "metadata-action" in str(s.get("uses", ""))
        )
        assert "ghcr.io/${{ github.repository_owner }}/" in meta["with"]["images"]
        assert "type=sha" in meta["with"]["tags"]
        assert "type=semver" in meta["with"]["tags"]
        flavor = meta["with"]["flavor"].split()
        assert "latest=false" in flavor
        # The GPU image: the CPU image's tags with -gpu, the tags the chart's image.variant=gpu
        # defaults to (<appVersion>-gpu).
        assert ("suffix=-gpu" in flavor) == (suffix == "-gpu"), name


def test_scan_fails_on_critical_findings(workflow: dict[Any, Any]) -> None:
    for name, image in (
        ("publish", "${{ env.CI_IMAGE }}"),
        ("publish-gpu", "${{ env.CI_IMAGE_GPU }}"),
    ):
        publish = jobs(workflow)[name]
        [scan] = [s for s in publish["steps"] if "scan-action" in str(s.get("uses", ""))]
        assert scan["with"]["image"] == image
        assert scan["with"]["severity-cutoff"] == "critical"
        assert scan["with"]["fail-build"] is True
        names = [s.get("name", s.get("uses", "")) for s in publish["steps"]]
        assert names.index(scan["name"]) < names.index("Push"), f"{name}: scan before push"


# --- the two image targets ---------------------------------------------------------------------


def test_build_jobs_build_the_cpu_and_the_gpu_target(workflow: dict[Any, Any]) -> None:
    all_jobs = jobs(workflow)
    assert workflow["env"]["CI_IMAGE"] == "resnet-serving:ci"
    assert workflow["env"]["CI_IMAGE_GPU"] == "resnet-serving:ci-gpu"
    expected = {
        "build": ("cpu", "${{ env.CI_IMAGE }}", "image", "scope=cpu"),
        "build-gpu": ("gpu", "${{ env.CI_IMAGE_GPU }}", "image-gpu", "scope=gpu"),
    }
    for name, (target, tag, artifact, scope) in expected.items():
        job = all_jobs[name]
        [bake] = builds(job)
        assert bake["with"]["target"] == target
        assert bake["with"]["tags"] == tag
        # Each target its own cache scope: neither evicts the other's index.
        assert scope in bake["with"]["cache-from"]
        assert scope in bake["with"]["cache-to"]
        assert "VERSION=" in bake["with"]["build-args"]
        [upload] = [s for s in job["steps"] if "upload-artifact" in str(s.get("uses", ""))]
        assert upload["with"]["name"] == artifact
    # The e2e and publish jobs take the CPU image, publish-gpu the GPU image; the slower GPU
    # build holds up neither the e2e job nor the deployment.
    downloads = {
        name: [
            s["with"]["name"] for s in job["steps"] if "download-artifact" in str(s.get("uses", ""))
        ]
        for name, job in all_jobs.items()
    }
    assert downloads["e2e"] == ["image"]
    assert downloads["publish"] == ["image"]
    assert downloads["publish-gpu"] == ["image-gpu"]
    assert all_jobs["publish-gpu"]["needs"] == "build-gpu"
    assert "build-gpu" not in str(all_jobs["e2e"]["needs"])
    assert not {"build-gpu", "publish-gpu"} & set(all_jobs["deploy"]["needs"])


def test_the_cpu_image_fails_the_build_above_one_gib_and_both_sizes_are_reported(
    workflow: dict[Any, Any],
) -> None:
    assert workflow["env"]["CPU_IMAGE_MAX_BYTES"] == 1073741824  # 1 GiB
    build = jobs(workflow)["build"]
    size = step_index(build, ".github/scripts/image-size.sh")
    run = str(build["steps"][size]["run"])
    assert run == (
        '.github/scripts/image-size.sh "$CI_IMAGE" /tmp/image.tar.zst "$CPU_IMAGE_MAX_BYTES"'
    )
    # After the archive it measures is written, before anything else runs on the image.
    assert step_index(build, 'docker save "$CI_IMAGE"') < size
    assert size < step_index(build, "smoke-image.sh")
    gpu = jobs(workflow)["build-gpu"]
    gpu_run = str(gpu["steps"][step_index(gpu, ".github/scripts/image-size.sh")]["run"])
    assert gpu_run == '.github/scripts/image-size.sh "$CI_IMAGE_GPU" /tmp/image-gpu.tar.zst'


def test_both_images_are_smoke_tested_with_the_photographs_top_1(workflow: dict[Any, Any]) -> None:
    assert workflow["env"]["EXPECTED_TOP"] == 1
    assert workflow["env"]["EXPECTED_LABEL"] == "military uniform"
    for name, target, image in (("build", "cpu", "CI_IMAGE"), ("build-gpu", "gpu", "CI_IMAGE_GPU")):
        job = jobs(workflow)[name]
        smoke = step_index(job, "smoke-image.sh")
        assert str(job["steps"][smoke]["run"]) == (
            f'.github/scripts/smoke-image.sh {target} "${image}" "$PHOTO" "$EXPECTED_LABEL" '
            '"$EXPECTED_TOP"'
        )
        assert step_index(job, "sample_photo.py") < smoke


def test_the_gpu_jobs_make_room_on_the_runner_first(workflow: dict[Any, Any]) -> None:
    for name in ("build-gpu", "publish-gpu"):
        job = jobs(workflow)[name]
        free = step_index(job, "sudo rm -rf /usr/local/lib/android")
        assert free == 0, f"{name}: free the disk before anything lands on it"


def test_publish_builds_the_cpu_image_for_amd64_and_arm64(workflow: dict[Any, Any]) -> None:
    publish = jobs(workflow)["publish"]
    steps = publish["steps"]
    uses = [str(s.get("uses", "")) for s in steps]
    qemu = next(i for i, u in enumerate(uses) if u.startswith("docker/setup-qemu-action@"))
    buildx = next(i for i, u in enumerate(uses) if u.startswith("docker/setup-buildx-action@"))
    oci, push = builds(publish)
    assert qemu < buildx < steps.index(oci) < steps.index(push)
    assert "arm64" in steps[qemu]["with"]["platforms"]
    for bake in (oci, push):
        assert bake["with"]["target"] == "cpu"
        assert bake["with"]["platforms"] == "linux/amd64,linux/arm64"
        assert "type=gha,scope=cpu" in bake["with"]["cache-from"].split()
        assert bake["with"]["build-args"] == oci["with"]["build-args"]
    # Every run builds both platforms (a pull request too); only main and tags push.
    assert "if" not in oci
    assert oci["with"]["push"] is False
    assert oci["with"]["outputs"].startswith("type=oci,dest=")
    assert push["with"]["push"] is True
    assert push["with"]["tags"] == "${{ steps.meta.outputs.tags }}"
    # Between the two: the amd64 half has the tested, scanned image's layers.
    same = step_index(publish, ".github/scripts/same_layers.py")
    assert steps.index(oci) < same < steps.index(push)
    assert "linux/amd64" in str(steps[same]["run"])
    # The deploy job pins the pushed image index by digest.
    assert publish["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
    assert push["id"] == "push"


def step_index(job: dict[str, Any], needle: str) -> int:
    """Index of the first step whose run: contains NEEDLE."""
    for i, step in enumerate(job["steps"]):
        if needle in str(step.get("run", "")):
            return i
    raise AssertionError(f"no step runs {needle!r}")


E2E_SUITE_ENV = {
    "E2E_NAMESPACE": "${{ env.NAMESPACE }}",
    "E2E_RELEASE": "${{ env.RELEASE }}",
    "E2E_CHART": "charts/resnet-serving",
    "E2E_KUBECTL": "kubectl",
    "E2E_HELM": "helm",
    "E2E_NODE_EXEC": "docker exec ${{ env.KIND_CLUSTER }}-control-plane",
    "E2E_RESULTS": "bench/results/e2e-kind.json",
}
E2E_SUITE_COMMAND = ".venv/bin/pytest tests/e2e -m e2e -v -p no:cacheprovider"


def test_e2e_job_installs_the_release_on_kind(workflow: dict[Any, Any]) -> None:
    e2e = jobs(workflow)["e2e"]
    assert e2e["needs"] == "build"
    [kind] = [s for s in e2e["steps"] if "kind-action" in str(s.get("uses", ""))]
    assert kind["with"]["cluster_name"] == "${{ env.KIND_CLUSTER }}"
    assert e2e["env"]["KIND_CLUSTER"] == "ci"
    commands = "\n".join(run_steps(e2e))
    for needle in (
        'kind load image-archive /tmp/image.tar --name "$KIND_CLUSTER"',
        "helm dependency build charts/resnet-serving",
        "-f values-dev.yaml $CI_HELM_ARGS --wait",
    ):
        assert needle in commands, needle
    assert step_index(e2e, "helm dependency build") < step_index(e2e, "helm install")
    helm_args = shlex.split(e2e["env"]["CI_HELM_ARGS"])
    for value in (
        "image.repository=resnet-serving",
        "image.tag=ci",
        "image.pullPolicy=Never",
        # The suite's zero-failure rollout and pod-deletion tests need a second pod.
        "replicaCount=2",
        # The lighter monitoring stack: the operator and Prometheus only.
        "kube-prometheus-stack.grafana.enabled=false",
        "kube-prometheus-stack.alertmanager.enabled=false",
        "kube-prometheus-stack.nodeExporter.enabled=false",
        "kube-prometheus-stack.kubeStateMetrics.enabled=false",
    ):
        assert value in helm_args, value
    assert not any("prometheusOperator.enabled=false" in a for a in helm_args)
    assert workflow["env"]["CI_IMAGE"] == "resnet-serving:ci"


def test_e2e_namespace_enforces_the_restricted_pod_security_standard(
    workflow: dict[Any, Any],
) -> None:
    e2e = jobs(workflow)["e2e"]
    index = step_index(e2e, "pod-security.kubernetes.io/enforce=restricted")
    run = str(e2e["steps"][index]["run"])
    assert 'kubectl create namespace "$NAMESPACE"' in run
    assert 'kubectl label namespace "$NAMESPACE"' in run
    assert index < step_index(e2e, "helm install")


def test_e2e_job_installs_metrics_server_and_waits_for_it(workflow: dict[Any, Any]) -> None:
    e2e = jobs(workflow)["e2e"]
    assert e2e["env"]["METRICS_SERVER_VERSION"] == "v0.8.0"
    install = step_index(e2e, "components.yaml")
    run = str(e2e["steps"][install]["run"])
    assert (
        "https://github.com/kubernetes-sigs/metrics-server/releases/download/"
        "$METRICS_SERVER_VERSION/components.yaml"
    ) in run
    assert "kubectl patch deployment metrics-server --namespace kube-system" in run
    assert '"value": "--kubelet-insecure-tls"' in run
    wait = step_index(e2e, "kubectl top nodes")
    wait_run = str(e2e["steps"][wait]["run"])
    assert re.search(r"for _ in \$\(seq 1 \d+\)", wait_run), "the wait is not bounded"
    assert "exit 1" in wait_run
    assert install < step_index(e2e, "helm install") < wait < step_index(e2e, E2E_SUITE_COMMAND)


def test_e2e_job_runs_the_e2e_suite_with_its_environment(workflow: dict[Any, Any]) -> None:
    e2e = jobs(workflow)["e2e"]
    index = step_index(e2e, E2E_SUITE_COMMAND)
    suite = e2e["steps"][index]
    assert suite["env"] == E2E_SUITE_ENV
    assert 'export E2E_KUBECONFIG="$HOME/.kube/config"' in suite["run"]
    # Bounded below the job, so that the diagnostics still run after a hung suite.
    assert 0 < int(suite["timeout-minutes"]) < int(e2e["timeout-minutes"])
    # Every variable set is one the suite reads (tests/e2e/conftest.py), and the same suite
    # runs locally (scripts/e2e.sh).
    conftest = (ROOT / "tests" / "e2e" / "conftest.py").read_text()
    read = set(re.findall(r"\"(E2E_[A-Z_]+)\"", conftest))
    assert {*E2E_SUITE_ENV, "E2E_KUBECONFIG"} <= read, read
    assert "pytest tests/e2e -m e2e" in (ROOT / "scripts" / "e2e.sh").read_text()
    # Its Python is the project's .venv, set up as in the lint and test jobs.
    steps = e2e["steps"]
    setup = [i for i, s in enumerate(steps) if s.get("uses") == "./.github/actions/setup"]
    assert setup, "the e2e job does not use ./.github/actions/setup"
    assert setup[0] < step_index(e2e, "scripts/install.sh") < index
    # No bespoke checks beside the suite.
    assert not any(".github/scripts" in cmd for cmd in run_steps(e2e))


def test_e2e_job_uploads_the_figures_and_keeps_its_diagnostics(workflow: dict[Any, Any]) -> None:
    e2e = jobs(workflow)["e2e"]
    suite = step_index(e2e, E2E_SUITE_COMMAND)
    [upload] = [s for s in e2e["steps"] if "upload-artifact" in str(s.get("uses", ""))]
    assert upload["with"]["path"] == E2E_SUITE_ENV["E2E_RESULTS"]
    assert "!cancelled()" in upload["if"], "the figures of a failed run are the useful ones"
    assert e2e["steps"].index(upload) > suite
    [diagnostics] = [s for s in e2e["steps"] if s.get("name") == "Diagnostics"]
    assert diagnostics["if"] == "failure()"
    assert e2e["steps"].index(diagnostics) > suite


def test_workflow_scripts_exist_and_are_all_used(workflow: dict[Any, Any]) -> None:
    """No step runs a helper that is gone, and no helper is left that nothing runs."""
    text = CI.read_text()
    referenced = set(re.findall(r"\.github/scripts/([\w.-]+)", text))
    for name in referenced:
        assert (ROOT / ".github" / "scripts" / name).is_file(), name
    scripts_dir = ROOT / ".github" / "scripts"
    # Helpers called by another helper count as used (smoke-image.sh calls check_prediction.py).
    called = {
        p.name
        for p in scripts_dir.iterdir()
        for caller in scripts_dir.iterdir()
        if caller.name in referenced and caller != p and p.name in caller.read_text()
    }
    present = {p.name for p in scripts_dir.iterdir() if p.is_file()}
    assert present <= referenced | called, present - referenced - called


def test_deploy_runs_on_main_after_everything_and_skips_without_a_cluster(
    workflow: dict[Any, Any],
) -> None:
    deploy = jobs(workflow)["deploy"]
    assert set(deploy["needs"]) == {"lint", "test", "e2e", "publish"}
    assert MAIN_PUSH in deploy["if"]
    assert ON_MAIN in deploy["if"]
    assert deploy["env"]["KUBECONFIG_CONTENT"] == "${{ secrets.KUBECONFIG }}"
    first = deploy["steps"][0]["run"]
    assert '[ -z "$KUBECONFIG_CONTENT" ]' in first
    assert "::notice" in first
    for step in deploy["steps"][1:]:
        assert step["if"] == "steps.cluster.outputs.configured == 'true'"
    commands = "\n".join(run_steps(deploy))
    # --rollback-on-failure is Helm 4's spelling of --atomic.
    for needle in (
        "helm upgrade --install",
        "--rollback-on-failure",
        "--wait",
        "-f values-prod.yaml",
        'image.digest="$DIGEST"',
    ):
        assert needle in commands, needle


def test_helm_version_matches_install_sh(workflow: dict[Any, Any]) -> None:
    install = (ROOT / "scripts" / "install.sh").read_text()
    match = re.search(r"^HELM_VERSION=(\S+)$", install, re.MULTILINE)
    assert match is not None
    assert workflow["env"]["HELM_VERSION"] == match.group(1)


def test_dependabot_keeps_actions_and_base_image_fresh() -> None:
    config = load(ROOT / ".github" / "dependabot.yml")
    ecosystems = {u["package-ecosystem"] for u in config["updates"]}
    assert {"github-actions", "docker"} <= ecosystems


# --- actionlint and shellcheck ---------------------------------------------------------------


def test_shellcheck_is_installed_so_actionlint_checks_run_scripts() -> None:
    # Without shellcheck actionlint silently skips the run: scripts, which GitHub's runners
    # (shellcheck preinstalled) would then reject.
    tool("shellcheck")


def test_actionlint_passes() -> None:
    tool("shellcheck")
    # Files named explicitly: works in a checkout without .git (a source archive) too.
    workflows = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert workflows
    result = subprocess.run(
        [tool("actionlint"), "-no-color", *workflows],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    tool("shellcheck")
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.head_commit.message }} $UNQUOTED\n"
        "      - uses: actions/checkout@v9\n        with: {nope: 1}\n"
    )
    result = subprocess.run(
        [tool("actionlint"), "-no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "shellcheck" in result.stdout, "actionlint did not run shellcheck"


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = sorted((ROOT / ".github" / "scripts").glob("*.sh"))
    assert scripts
    result = subprocess.run(
        [tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the build and publish jobs' helpers, against a fake docker -------------------------------

SCRIPTS = ROOT / ".github" / "scripts"

# Answers the docker commands that smoke-image.sh and image-size.sh send, from FAKE_* variables:
# FAKE_ENV (the image's ENV lines), FAKE_SIZE, FAKE_TORCH (True/False), FAKE_MANIFEST (1 = the
# IR's manifest.json exists), FAKE_RESPONSE (the /predict body). Logs each call to FAKE_LOG.
FAKE_DOCKER = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "image inspect")
    case "$4" in
      *Config.Env*) printf '%b\n' "$FAKE_ENV" ;;
      *Size*) echo "$FAKE_SIZE" ;;
    esac
    exit 0 ;;
  "run -d") echo fake-container-id; exit 0 ;;
esac
case "$1" in
  exec)
    shift
    user=""
    while [ "${1#-}" != "$1" ]; do
      if [ "$1" = -u ]; then user=$2; shift; fi
      shift
    done
    shift  # the container
    case "$1" in
      id) echo 10001 ;;
      touch) [ "$user" = 0 ] && exit 1 ;;
      test) [ "${FAKE_MANIFEST:-0}" = 1 ] || exit 1 ;;
      python)
        case "$3" in
          *find_spec*) echo "$FAKE_TORCH" ;;
          */predict*) cat > /dev/null; echo "$FAKE_RESPONSE" ;;
          *urlopen*) echo 200 ;;
        esac ;;
    esac
    exit 0 ;;
  inspect)
    case "$3" in
      *Running*) echo true ;;
      *Health*) echo healthy ;;
      *ExitCode*) echo 0 ;;
    esac
    exit 0 ;;
  stop | rm | logs) exit 0 ;;
esac
echo "fake docker: unexpected: $*" >&2
exit 3
"""

LABELS = ["military uniform", "suit", "Windsor tie", "bow tie", "cloak"]


def prediction(labels: list[str]) -> str:
    return json.dumps(
        {
            "model": "resnet50",
            "weights": "ResNet50_Weights.IMAGENET1K_V2",
            "predictions": [
                {"label": label, "class_id": i, "score": 0.5 / (i + 1)}
                for i, label in enumerate(labels)
            ],
        }
    )


def run_helper(
    tmp_path: Path, script: str, *args: str, **fake: str
) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """Run .github/scripts/SCRIPT with the fake docker first on PATH: (process, summary, log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    summary = tmp_path / "summary.md"
    log = tmp_path / "docker.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "GITHUB_STEP_SUMMARY": str(summary),
        "FAKE_LOG": str(log),
        **{f"FAKE_{key.upper()}": value for key, value in fake.items()},
    }
    proc = subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return proc, _text(summary), _text(log)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


CPU_IMAGE = {
    "env": "PATH=/opt/venv/bin\\nSERVING_MODEL_DIR=/opt/model",
    "torch": "False",
    "manifest": "1",
}
GPU_IMAGE = {"env": "PATH=/opt/venv/bin", "torch": "True", "manifest": "0"}


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "grace_hopper.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg: the fake docker never decodes it")
    return path


@pytest.mark.parametrize(("target", "image"), [("cpu", CPU_IMAGE), ("gpu", GPU_IMAGE)])
def test_smoke_script_passes_each_target_that_keeps_its_contract(
    tmp_path: Path, photo: Path, target: str, image: dict[str, str]
) -> None:
    proc, summary, log = run_helper(
        tmp_path,
        "smoke-image.sh",
        target,
        f"img:{target}",
        str(photo),
        "military uniform",
        "1",
        response=prediction(LABELS),
        **image,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"smoke test passed: {target} image img:{target}" in proc.stdout
    assert f"| {target} image | img:{target} |" in summary
    assert '"military uniform" in the top 1' in summary
    # As the chart runs it: read-only root, no capabilities, no network.
    run = next(line for line in log.splitlines() if line.startswith("run -d"))
    for flag in ("--read-only", "--cap-drop ALL", "--network none", "no-new-privileges"):
        assert flag in run, flag
    assert ("test -f /opt/model/manifest.json" in log) == (target == "cpu")


@pytest.mark.parametrize(
    ("target", "image", "message"),
    [
        ("cpu", {**CPU_IMAGE, "torch": "True"}, "the CPU image has torch installed"),
        ("cpu", {**CPU_IMAGE, "env": "PATH=/opt/venv/bin"}, "sets no SERVING_MODEL_DIR"),
        ("cpu", {**CPU_IMAGE, "manifest": "0"}, "no /opt/model/manifest.json"),
        ("gpu", {**GPU_IMAGE, "torch": "False"}, "the GPU image has no torch"),
        ("gpu", {**GPU_IMAGE, "env": "SERVING_MODEL_DIR=/opt/model"}, "it has no IR"),
    ],
)
def test_smoke_script_fails_an_image_that_breaks_its_targets_contract(
    tmp_path: Path, photo: Path, target: str, image: dict[str, str], message: str
) -> None:
    proc, _, _ = run_helper(
        tmp_path,
        "smoke-image.sh",
        target,
        "img",
        str(photo),
        "military uniform",
        response=prediction(LABELS),
        **image,
    )
    assert proc.returncode == 1
    assert f"::error title=Image smoke test ({target})::" in proc.stdout
    assert message in proc.stdout


def test_smoke_script_checks_the_top_1_by_default(tmp_path: Path, photo: Path) -> None:
    second = ["suit", "military uniform", "Windsor tie"]
    args = ("cpu", "img", str(photo), "military uniform")
    proc, _, _ = run_helper(
        tmp_path, "smoke-image.sh", *args, response=prediction(second), **CPU_IMAGE
    )
    assert proc.returncode == 1
    assert "'military uniform' is not in the top 1" in proc.stderr
    proc, _, _ = run_helper(
        tmp_path, "smoke-image.sh", *args, "5", response=prediction(second), **CPU_IMAGE
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args",
    [("tpu", "img", "p.jpg", "x"), ("cpu", "img", "p.jpg"), ("cpu", "img", "p.jpg", "x", "0")],
)
def test_smoke_script_refuses_bad_arguments_before_touching_docker(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    proc, _, log = run_helper(tmp_path, "smoke-image.sh", *args)
    assert proc.returncode == 2
    assert "usage: smoke-image.sh cpu|gpu" in proc.stderr
    assert log == ""


GIB = 1073741824


@pytest.mark.parametrize(
    ("size", "limit", "code"),
    [(GIB - 1, str(GIB), 0), (GIB, str(GIB), 0), (GIB + 1, str(GIB), 1), (7 * GIB, None, 0)],
)
def test_size_script_reports_both_sizes_and_fails_only_over_the_limit(
    tmp_path: Path, size: int, limit: str | None, code: int
) -> None:
    archive = tmp_path / "image.tar.zst"
    archive.write_bytes(b"z" * 123456)
    args = ["img:ci", str(archive)] + ([limit] if limit else [])
    proc, summary, _ = run_helper(tmp_path, "image-size.sh", *args, size=str(size))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert f"uncompressed {size} bytes" in proc.stdout
    assert "compressed 123456 bytes" in proc.stdout
    assert f"| uncompressed (`docker image inspect`) | {size} |" in summary
    assert "| compressed (`docker save \\| zstd`) | 123456 |" in summary
    assert ("| limit (uncompressed) | 1073741824 |" in summary) == (limit is not None)
    if code:
        assert "::error title=Image size::img:ci is 1073741825 bytes" in proc.stdout


def test_size_script_refuses_a_limit_that_is_no_number(tmp_path: Path) -> None:
    proc, _, _ = run_helper(tmp_path, "image-size.sh", "img", "/dev/null", "1GiB", size="1")
    assert proc.returncode == 2
    assert "MAX_BYTES must be a number of bytes" in proc.stderr


def _blob(layout: tarfile.TarFile, document: dict[str, Any]) -> dict[str, str]:
    """Add a JSON blob to an OCI layout being written; its descriptor."""
    data = json.dumps(document).encode()
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    layout.addfile(info, BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": str(len(data))}


def oci_archive(path: Path, layers: dict[str, list[str]]) -> Path:
    """A multi-platform OCI archive as buildx writes it: index.json -> image index -> a
    manifest per platform -> its config with rootfs.diff_ids (no layer blobs: not read)."""
    with tarfile.open(path, "w") as layout:
        entries = []
        for platform, diff_ids in layers.items():
            os_name, arch = platform.split("/")
            config = _blob(layout, {"rootfs": {"type": "layers", "diff_ids": diff_ids}})
            manifest = _blob(layout, {"schemaVersion": 2, "config": config, "layers": []})
            entries.append(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest,
                    "platform": {"os": os_name, "architecture": arch},
                }
            )
        index = _blob(layout, {"schemaVersion": 2, "manifests": entries})
        top = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", **index}],
            }
        ).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(top)
        layout.addfile(info, BytesIO(top))
    return path


def run_same_layers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "same_layers.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_same_layers_compares_one_platform_of_the_archive_with_the_tested_image(
    tmp_path: Path,
) -> None:
    tested = ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    archive = oci_archive(
        tmp_path / "multi.oci.tar",
        {"linux/amd64": tested, "linux/arm64": ["sha256:" + "c" * 64, "sha256:" + "d" * 64]},
    )
    tested_file = tmp_path / "tested.json"
    tested_file.write_text(json.dumps(tested))
    ok = run_same_layers(str(archive), "linux/amd64", str(tested_file))
    assert ok.returncode == 0, ok.stderr
    assert "has the tested image's 2 layers" in ok.stdout

    rebuilt = run_same_layers(str(archive), "linux/arm64", str(tested_file))
    assert rebuilt.returncode == 1
    assert "layer 0 is sha256:ccc" in rebuilt.stderr

    missing = run_same_layers(str(archive), "linux/s390x", str(tested_file))
    assert missing.returncode == 2
    assert "no linux/s390x image" in missing.stderr


# --- README ----------------------------------------------------------------------------------


def test_readme_badges_and_sections() -> None:
    readme = (ROOT / "README.md").read_text()
    badges = re.findall(
        r"https://github\.com/([\w.-]+/[\w.-]+)/actions/workflows/([\w.-]+)/badge\.svg", readme
    )
    assert badges, "no CI status badge in the README"
    values = yaml.safe_load((ROOT / "charts" / "resnet-serving" / "values.yaml").read_text())
    image_slug = values["image"]["repository"].removeprefix("ghcr.io/")
    for slug, workflow_file in badges:
        assert (WORKFLOWS / workflow_file).is_file(), workflow_file
        assert slug == image_slug, f"badge repo {slug} != chart image ghcr.io/{image_slug}"
    headings = re.findall(r"^## (.+)$", readme, re.MULTILINE)
    assert headings.index("Container") < headings.index("CI/CD") < headings.index("Layout")
