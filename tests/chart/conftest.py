"""Fixtures of the chart tests: pinned tools from .tools/, and the chart rendered offline.

The tools (helm, helm-unittest, kubeconform, helm-docs) and the offline schemas come from
scripts/install.sh; a missing one fails the test with that hint, never skips it.

The kube-prometheus-stack dependency cannot be downloaded here, and helm refuses to lint or
render a chart whose dependency is missing from charts/, whatever its condition. So the tests
render `offline_chart`: a directory of symlinks to every entry of the real chart (symlinks are
what the chart's own dashboards/ is too, so helm's handling of them is exercised) plus a
stand-in `charts/kube-prometheus-stack/` holding only a Chart.yaml of the pinned name and
version. The stand-in has no templates: the subchart's resources are not rendered here (they
are by the workflow's kind job, after `helm dependency build`); everything of our own is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.chartkit import (
    CHART,
    NAMESPACE,
    RELEASE,
    SCHEMAS,
    TOOLS,
    Helm,
    Manifest,
    Render,
    template_args,
)


def _tool(name: str) -> Path:
    path = TOOLS / "bin" / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run scripts/install.sh", pytrace=False)
    return path


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return _tool("helm")


@pytest.fixture(scope="session")
def helm_unittest_bin() -> Path:
    return _tool("helm-unittest")


@pytest.fixture(scope="session")
def kubeconform_bin() -> Path:
    return _tool("kubeconform")


@pytest.fixture(scope="session")
def helm_docs_bin() -> Path:
    return _tool("helm-docs")


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    if not (SCHEMAS / ".version").is_file():
        pytest.fail(f"{SCHEMAS} is missing: run scripts/install.sh", pytrace=False)
    return SCHEMAS


def _dependency(name: str) -> dict[str, Any]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for dep in chart.get("dependencies", []):
        if dep["name"] == name:
            found: dict[str, Any] = dep
            return found
    raise AssertionError(f"Chart.yaml has no dependency {name}")


@pytest.fixture(scope="session")
def offline_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real chart through symlinks, with a stand-in for the kube-prometheus-stack chart."""
    root = tmp_path_factory.mktemp("offline-chart") / CHART.name
    root.mkdir()
    for entry in CHART.iterdir():
        if entry.name == "charts":
            continue
        (root / entry.name).symlink_to(entry)
    stub = root / "charts" / "kube-prometheus-stack"
    stub.mkdir(parents=True)
    dep = _dependency("kube-prometheus-stack")
    pinned = dep["version"].lstrip("~^=")
    (stub / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": dep["name"],
                "version": pinned,
                "description": "offline stand-in for the test suite; renders nothing",
            }
        )
    )
    return root


@pytest.fixture(scope="session")
def helm(helm_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run helm with an isolated home (no repositories, no plugins, no cache of the user's)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def render(helm: Helm, offline_chart: Path) -> Render:
    """`helm template` of the offline chart -> the manifests, hook pods included."""
    cache: dict[tuple[Any, ...], list[Manifest]] = {}

    def run(
        values: Sequence[Path] = (),
        set_values: Sequence[str] = (),
        *,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
    ) -> list[Manifest]:
        key = (tuple(values), tuple(set_values), release, namespace)
        if key not in cache:
            out = helm(
                *template_args(
                    offline_chart, values, set_values, release=release, namespace=namespace
                )
            ).stdout
            cache[key] = [doc for doc in yaml.safe_load_all(out) if doc]
        # Fresh copies: a test that edits a manifest must not change another test's.
        return [yaml.safe_load(yaml.safe_dump(doc)) for doc in cache[key]]

    return run
