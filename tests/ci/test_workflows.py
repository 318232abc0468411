"""The GitHub Actions workflow, checked here (it runs for real on GitHub): actionlint clean,
every action pinned by commit SHA, least-privilege permissions, timeouts, concurrency, the test
job running exactly the commands of .ci/run, push and deploy only from main, the e2e job running
the one e2e suite (tests/e2e) on kind."""

from __future__ import annotations

import re
import shlex
import subprocess
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


def test_permissions_are_read_only_except_publishing_packages(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in jobs(workflow).items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{name}: no explicit permissions"
        writes = {scope for scope, level in permissions.items() if level == "write"}
        expected = {"packages"} if name == "publish" else set()
        assert writes == expected, f"{name} writes {writes}"
        assert set(permissions.values()) <= {"read", "write", "none"}


# The e2e suite waits on an HPA scaling out and back in and on an alert firing and resolving.
TIMEOUT_LIMITS = {"e2e": 40}


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
    ):
        assert needle in commands, needle


def test_image_is_pushed_only_from_main_or_a_version_tag(workflow: dict[Any, Any]) -> None:
    all_jobs = jobs(workflow)
    build = all_jobs["build"]
    [bake] = [s for s in build["steps"] if "build-push-action" in str(s.get("uses", ""))]
    assert bake["with"]["push"] is False
    assert "type=gha" in bake["with"]["cache-from"]
    assert bake["with"]["cache-to"].startswith("type=gha")
    for name, job in all_jobs.items():
        for step in job["steps"]:
            text = str(step.get("run", "")) + str(step.get("uses", ""))
            if "docker push" in text or "login-action" in text:
                assert name == "publish", f"{name} pushes or logs in"
                condition = step.get("if", "")
                assert MAIN_PUSH in condition, condition
                assert ON_MAIN in condition, condition
                assert "refs/tags/v" in condition
    meta = next(
        s for s in all_jobs["publish"]["steps"] if "metadata-action" in str(s.get("uses", ""))
    )
    assert "ghcr.io/${{ github.repository_owner }}/" in meta["with"]["images"]
    assert "type=sha" in meta["with"]["tags"]
    assert "type=semver" in meta["with"]["tags"]


def test_scan_fails_on_critical_findings(workflow: dict[Any, Any]) -> None:
    publish = jobs(workflow)["publish"]
    [scan] = [s for s in publish["steps"] if "scan-action" in str(s.get("uses", ""))]
    assert scan["with"]["severity-cutoff"] == "critical"
    assert scan["with"]["fail-build"] is True
    names = [s.get("name", s.get("uses", "")) for s in publish["steps"]]
    assert names.index(scan["name"]) < names.index("Push"), "scan before push"


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
