"""The helm-unittest suites in charts/resnet-serving/tests/: one per template, all passing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from chart.chartkit import CHART


def test_every_template_has_its_own_suite() -> None:
    templates = {p.name for p in (CHART / "templates").iterdir() if not p.name.startswith("_")}
    covered: set[str] = set()
    for suite in (CHART / "tests").glob("*_test.yaml"):
        covered.update(yaml.safe_load(suite.read_text())["templates"])
    assert templates - covered == set(), "templates without a helm-unittest suite"


def test_helm_unittest_suites_pass(helm_unittest_bin: Path, tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            str(helm_unittest_bin),
            "--strict",
            "--color=false",
            "--output-type",
            "JUnit",
            "--output-file",
            str(report),
            str(CHART),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    suites = len(list((CHART / "tests").glob("*_test.yaml")))
    assert re.search(rf"Test Suites:\s+{suites} passed, {suites} total", output), output
    tests = re.search(r"Tests:\s+(\d+) passed, (\d+) total", output)
    assert tests
    assert tests.group(1) == tests.group(2)
    assert int(tests.group(1)) >= 3 * suites
    assert report.read_text().count("<testcase") == int(tests.group(1))
