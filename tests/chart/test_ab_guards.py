"""The A/B refusals the template makes itself (templates/_ab.tpl), beside the schema's.

The schema refuses a percent outside 0-100 or a malformed version label first (helm-unittest's
canary_test.yaml), so these render with `--skip-schema-validation`, as a user who turns the
schema off would: the chart must still refuse, naming the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from chart.chartkit import Helm, template_args

CANARY = ("canary.enabled=true", "canary.config.SERVING_MODEL_NAME=resnet18")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("canary.trafficPercent=101", "canary.trafficPercent (101) must be between 0 and 100"),
        ("canary.trafficPercent=-1", "canary.trafficPercent (-1) must be between 0 and 100"),
        ("canary.shadowPercent=101", "canary.shadowPercent (101) must be between 0 and 100"),
    ],
)
def test_a_percent_outside_0_100_is_refused_without_the_schema(
    helm: Helm, offline_chart: Path, value: str, message: str
) -> None:
    args = template_args(offline_chart, set_values=[*CANARY, value])
    proc = helm(*args, "--skip-schema-validation", check=False)
    assert proc.returncode != 0, proc.stdout[:200]
    assert message in proc.stderr, proc.stderr


def test_a_percent_inside_0_100_renders_without_the_schema(helm: Helm, offline_chart: Path) -> None:
    args = template_args(offline_chart, set_values=[*CANARY, "canary.trafficPercent=100"])
    assert helm(*args, "--skip-schema-validation").returncode == 0


@pytest.mark.parametrize("key", ["modelVersion", "canary.modelVersion"])
def test_a_version_label_the_app_would_refuse_is_refused_without_the_schema(
    helm: Helm, offline_chart: Path, key: str
) -> None:
    args = template_args(offline_chart, set_values=[*CANARY, f"{key}=bad label"])
    proc = helm(*args, "--skip-schema-validation", check=False)
    assert proc.returncode != 0, proc.stdout[:200]
    assert f'{key} "bad label": a version label is 1-32' in proc.stderr, proc.stderr
