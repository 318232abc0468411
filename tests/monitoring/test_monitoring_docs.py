"""The monitoring docs stay true: the README's Monitoring section names every metric the app's
real /metrics page declares, every dashboard panel and every alert; docs/TROUBLESHOOTING.md has
one section per alert and keeps the place reserved for the other sections; metrics retention is
at least 7 days with values-dev.yaml and documented for production. The alerts are those the
chart renders with a canary (CANARY_ON), so ResNetServingCanaryWorse is one of them."""

from __future__ import annotations

import json
import re

import yaml
from chart.chartkit import ROOT, VALUES_DEV, Render

from monitoring.monitoringkit import (
    CANARY_ON,
    DASHBOARDS_DIR,
    TROUBLESHOOTING,
    families,
    github_anchor,
    markdown_headings,
    panels,
    rule_groups,
    rules_of,
)

README = ROOT / "README.md"
DEPLOYMENT = ROOT / "docs" / "DEPLOYMENT.md"
COLLECTOR_PREFIXES = ("process_", "python_")  # the client library's, described as a group


def readme_monitoring() -> str:
    text = README.read_text()
    match = re.search(r"^## Monitoring\n(.*?)^## ", text, re.S | re.M)
    assert match, "README has no '## Monitoring' section followed by another section"
    assert text.index("## Monitoring") < text.index("## Layout")
    return match.group(1)


def exposed_name(family: str, kind: str) -> str:
    return f"{family}_total" if kind == "counter" else family


def test_readme_lists_every_metric_of_the_running_app(metrics_text: str) -> None:
    section = readme_monitoring()
    missing = [
        exposed_name(name, kind)
        for name, kind in families(metrics_text).items()
        if not name.startswith(COLLECTOR_PREFIXES)
        and not name.endswith("_created")  # the `*_created` timestamps, named as a group
        and f"`{exposed_name(name, kind)}`" not in section
    ]
    assert missing == [], "metrics missing from README's Monitoring table"
    for prefix in COLLECTOR_PREFIXES:
        assert f"`{prefix}" in section
    assert "`*_created`" in section


def test_readme_lists_every_panel_and_alert(render: Render) -> None:
    section = " ".join(readme_monitoring().split())
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        assert dashboard["title"] in section
        for panel in panels(dashboard):
            assert panel["title"] in section, f"panel {panel['title']!r} not in README"
    for rule in rules_of(rule_groups(render, set_values=CANARY_ON)):
        if "alert" in rule:
            assert rule["alert"] in section, rule["alert"]


def test_troubleshooting_has_one_section_per_alert_and_the_reserved_place(render: Render) -> None:
    text = TROUBLESHOOTING.read_text()
    alerts = {
        r["alert"] for r in rules_of(rule_groups(render, set_values=CANARY_ON)) if "alert" in r
    }
    headings = markdown_headings(text.split("<!-- other-sections:start -->")[0], 2)
    assert sorted(headings) == sorted(alerts), "one '## <alert>' section per alert"
    for heading in headings:
        body = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning.**", "**Confirm.**", "**Fix.**"):
            assert part in body, f"{heading}: no {part}"
        assert "```promql" in body, f"{heading}: no PromQL to confirm it"
        assert github_anchor(heading) == heading.lower()
    start, end = "<!-- other-sections:start -->", "<!-- other-sections:end -->"
    assert text.index(start) < text.index(end)
    assert text.rstrip().endswith(end) or text.index(end) > text.index(headings[-1])


def test_dev_keeps_metrics_at_least_seven_days() -> None:
    values = yaml.safe_load(VALUES_DEV.read_text())
    spec = values["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]
    match = re.fullmatch(r"(\d+)([dwy])", spec["retention"])
    assert match, spec["retention"]
    days = int(match.group(1)) * {"d": 1, "w": 7, "y": 365}[match.group(2)]
    assert days >= 7
    assert spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]


def test_deployment_doc_says_how_prod_retention_is_set() -> None:
    text = DEPLOYMENT.read_text()
    assert "**Metrics retention in production.**" in text
    paragraph = text.split("**Metrics retention in production.**", 1)[1].split("\n## ", 1)[0]
    for needle in ("retention:", "retentionSize", "--storage.tsdb.retention.time"):
        assert needle in paragraph
