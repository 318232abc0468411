"""`helm lint --strict` with the chart's defaults, values-dev.yaml, values-prod.yaml and
values-gpu.yaml on top of values-prod.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from chart.chartkit import VALUES_DEV, VALUES_PROD, VALUES_PROD_GPU, Helm


@pytest.mark.parametrize(
    "values",
    [(), (VALUES_DEV,), (VALUES_PROD,), VALUES_PROD_GPU],
    ids=["defaults", "dev", "prod", "prod+gpu"],
)
def test_helm_lint_strict(helm: Helm, offline_chart: Path, values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(offline_chart)]
    for path in values:
        args += ["--values", str(path)]
    proc = helm(*args, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "1 chart(s) linted, 0 chart(s) failed" in output
    assert "[WARNING]" not in output, output
    assert "[ERROR]" not in output, output
