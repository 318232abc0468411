"""A real Prometheus server scraping a real app process, with the chart's rendered rules.

The app (`python -m app`, resnet18 with random weights, on a free loopback port, its prediction
cache's shared tier on a real redis-server on loopback) gets a steady mix of traffic from a
background thread: predictions (the same image again and again: cache hits), client errors (400;
bytes that are no image miss both cache tiers every time), overload refusals of a queue of one
(503 overloaded, `rejected_requests_total`), failed image URLs (502) and probes.
Prometheus (the Debian package's binary, a temporary config and data directory, loopback only,
scraping every second, evaluating every second) labels the target as a ServiceMonitor would
(job = the chart's full name, namespace, pod). Then:

- every expression of every dashboard panel, with the dashboard variables filled in, returns
  data without a PromQL error; panels on cluster-only series are listed by title and skipped;
- every dashboard variable query finds values;
- every alert and recording rule the chart renders evaluates without error, and every
  recording rule writes its series;
- every series named by a dashboard or a rule is one the running app declares on its real
  /metrics page (or Prometheus' own, a recording rule's, or a listed cluster series).

The three processes are started and stopped here by PID; everything is bounded in time.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chart.chartkit import Render
from PIL import Image

from harness.redis_server import RedisServer
from helpers.process import ManagedProcess, app_process, free_port
from monitoring.monitoringkit import (
    CLUSTER_SERIES,
    DASHBOARDS_DIR,
    PROMETHEUS_SERIES,
    declared_series,
    metric_names,
    panel_queries,
    rule_groups,
    rules_of,
    variable_queries,
    write_rules_file,
)
from scripts.dashboards import CLUSTER_ONLY_PANELS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RELEASE = "rel"
NAMESPACE = "serving"
JOB = f"{RELEASE}-resnet-serving"  # the chart's full name: the ServiceMonitor's job label
POD = f"{JOB}-local-0"
# Grafana's variables and macros, as a dashboard user with this job selected would send them.
VARIABLES = {
    "$__rate_interval": "20s",
    "$__interval": "5s",
    "$__range": "5m",
    "$namespace": NAMESPACE,
    "$job": JOB,
    "$pod": POD,
}
DEADLINE_S = 60.0


def fill(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


def png_bytes() -> bytes:
    image = Image.effect_noise((64, 48), 64).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


@dataclass
class Traffic:
    """Requests of every kind against the app until stopped; counts what it got back."""

    base_url: str
    statuses: dict[int, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> set[int]:
        with self.lock:
            return set(self.statuses)

    def run(self) -> None:
        image = png_bytes()
        dead_url = f"http://127.0.0.1:{free_port()}/cat.png"  # nothing listens there: 502
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            while not self.stop.is_set():
                try:
                    for response in (
                        client.post("/predict", files={"file": ("a.png", image, "image/png")}),
                        client.post("/predict", files={"file": ("a.png", image, "image/png")}),
                        client.post(
                            "/predict",
                            content=b"not an image",
                            headers={"content-type": "image/png"},
                        ),
                        # Two images against a queue of one: 503 overloaded (queue_full).
                        client.post(
                            "/predict/batch",
                            files=[("files", ("a.png", image, "image/png"))] * 2,
                        ),
                        client.post("/predict", json={"url": dead_url}),
                        client.get("/ready"),
                    ):
                        with self.lock:
                            count = self.statuses.get(response.status_code, 0)
                            self.statuses[response.status_code] = count + 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self.stop.wait(0.05)


@dataclass
class Stack:
    app: ManagedProcess
    prometheus: ManagedProcess
    traffic: Traffic
    groups: list[dict[str, Any]]
    api: httpx.Client

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; raises on a PromQL error."""
        response = self.api.get("/api/v1/query", params={"query": expr})
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_until_data(self, expr: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


class PromQLError(AssertionError):
    pass


def prometheus_config(app_port: int, rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{app_port}"],
                        "labels": {"namespace": NAMESPACE, "pod": POD},
                    }
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def stack(
    render: Render,
    prometheus_bin: Path,
    redis_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("prometheus-stack")
    groups = rule_groups(render, release=RELEASE, namespace=NAMESPACE)
    rules = write_rules_file(groups, work / "rules.yaml")
    env = {
        "SERVING_MODEL_NAME": "resnet18",
        "SERVING_MODEL_WEIGHTS": "random",
        "SERVING_NUM_THREADS": "1",
        "SERVING_LOG_FORMAT": "json",
        "SERVING_LOG_LEVEL": "warning",
        # A queue of one: a two-image batch request is refused (503, rejected_requests_total).
        "SERVING_MAX_QUEUE_SIZE": "1",
        # Image URLs on loopback are fetched (and fail: 502), so url_fetch_* has series.
        "SERVING_ALLOW_PRIVATE_URLS": "true",
    }
    # The prediction cache's shared tier (harness/redis_server.py: Debian's redis-server on
    # loopback), so its Redis series (REDIS_ONLY_SERIES) and panels have data.
    with ExitStack() as processes:
        redis = processes.enter_context(RedisServer(work / "redis.log"))
        env["SERVING_CACHE_REDIS_URL"] = redis.url_with_password
        app = processes.enter_context(app_process(env, log_path=work / "app.log"))
        app.wait_ready(timeout_s=120)
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(app.port, rules)))
        port = free_port()
        command = [
            str(prometheus_bin),
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with ManagedProcess(
            command, env={}, log_path=work / "prometheus.log", port=port, ready_path="/-/ready"
        ) as prometheus:
            prometheus.wait_ready(timeout_s=30)
            traffic = Traffic(app.base_url)
            thread = threading.Thread(target=traffic.run, name="traffic", daemon=True)
            thread.start()
            try:
                with httpx.Client(base_url=prometheus.base_url, timeout=10.0) as api:
                    yield Stack(app, prometheus, traffic, groups, api)
            finally:
                traffic.stop.set()
                thread.join(timeout=20)
            assert prometheus.terminate() == 0, prometheus.log_text()[-2000:]
        assert app.terminate() == 0


def test_traffic_has_successes_client_errors_and_server_errors(stack: Stack) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if {200, 400, 502, 503} <= stack.traffic.seen():
            break
        time.sleep(0.2)
    assert {200, 400, 502, 503} <= stack.traffic.seen(), stack.traffic.statuses
    assert not stack.traffic.errors[:3]


def test_prometheus_scrapes_the_app_with_the_servicemonitor_labels(stack: Stack) -> None:
    result = stack.query_until_data(f'up{{job="{JOB}", namespace="{NAMESPACE}", pod="{POD}"}} == 1')
    assert len(result) == 1


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    """Each panel's expressions, variables filled in, answer without error and with data.
    Panels on cluster-only series are skipped by title (CLUSTER_ONLY_PANELS)."""
    empty: list[str] = []
    checked = 0
    seen_titles: set[str] = set()
    for name, dashboard in dashboards().items():
        for title, ref, expr in panel_queries(dashboard):
            seen_titles.add(title)
            if title in CLUSTER_ONLY_PANELS:
                continue
            if not stack.query_until_data(fill(expr)):
                empty.append(f"{name}: {title} [{ref}]: {fill(expr)}")
            checked += 1
    assert checked >= 20
    assert empty == [], "panel queries without data"
    assert set(CLUSTER_ONLY_PANELS) <= seen_titles, "a listed cluster-only panel is gone"


def test_cluster_only_panels_are_exactly_those_on_cluster_series() -> None:
    """The skip list cannot hide an app panel: listed panels, and only they, read a series of
    CLUSTER_SERIES."""
    for dashboard in dashboards().values():
        by_title: dict[str, set[str]] = {}
        for title, _, expr in panel_queries(dashboard):
            by_title.setdefault(title, set()).update(metric_names(expr))
        for title, names in by_title.items():
            on_cluster = bool(names & set(CLUSTER_SERIES))
            assert on_cluster == (title in CLUSTER_ONLY_PANELS), title


def test_every_dashboard_variable_finds_values(stack: Stack) -> None:
    for dashboard in dashboards().values():
        for name, definition in variable_queries(dashboard):
            inner = fill(definition).removeprefix("label_values(").removesuffix(")")
            selector, _, label = inner.rpartition(",")
            deadline = time.monotonic() + DEADLINE_S
            values: list[str] = []
            while not values and time.monotonic() < deadline:
                response = stack.api.get(
                    f"/api/v1/label/{label.strip()}/values", params={"match[]": selector.strip()}
                )
                values = response.json()["data"]
                time.sleep(0.2 if not values else 0)
            assert values, f"variable {name}: {definition} finds nothing"


def test_every_rule_evaluates_without_error_and_recordings_have_data(stack: Stack) -> None:
    expected = {r.get("alert") or r["record"] for r in rules_of(stack.groups)}
    # The rules ran on the traffic's series: the 5xx ratio of the last 5 minutes is recorded.
    assert stack.query_until_data(
        f'resnet_serving:availability_errors:ratio_rate5m{{job="{JOB}"}} > 0'
    ), "the SLI recording of the 5xx ratio has no data"
    deadline = time.monotonic() + DEADLINE_S
    while True:
        groups = stack.api.get("/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        evaluated = [r for r in rules if not r["lastEvaluation"].startswith("0001-")]
        if len(evaluated) == len(rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"] for r in rules} == expected
    assert {g["name"] for g in groups} == {g["name"] for g in stack.groups}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        assert not rule.get("lastError"), rule["name"]
    for rule in rules_of(stack.groups):
        if "record" in rule:
            assert stack.query_until_data(rule["record"]), f"{rule['record']} recorded nothing"
    # The app is up and scraped: the service-down alerts stay inactive.
    states = {r["name"]: r["state"] for r in rules if r["type"] == "alerting"}
    assert states["ResNetServingDown"] == "inactive"
    assert states["ResNetServingTargetDown"] == "inactive"
    # Its Redis answers: the cache's Redis alert stays inactive too, on a series that exists.
    assert stack.query_until_data(f'prediction_cache_redis_up{{job="{JOB}"}} == 1')
    assert states["ResNetServingCacheRedisDown"] == "inactive"


def test_dashboards_and_rules_name_only_series_the_running_app_exports(stack: Stack) -> None:
    metrics = httpx.get(f"{stack.app.base_url}/metrics", timeout=10.0)
    assert metrics.status_code == 200
    recorded = {r["record"] for r in rules_of(stack.groups) if "record" in r}
    known = declared_series(metrics.text) | PROMETHEUS_SERIES | set(CLUSTER_SERIES) | recorded
    used: dict[str, set[str]] = {}
    for name, dashboard in dashboards().items():
        for title, _, expr in panel_queries(dashboard):
            for metric in metric_names(expr):
                used.setdefault(metric, set()).add(f"{name}: {title}")
        for variable, definition in variable_queries(dashboard):
            for metric in metric_names(definition):
                used.setdefault(metric, set()).add(f"{name}: ${variable}")
    for rule in rules_of(stack.groups):
        for metric in metric_names(rule["expr"]):
            used.setdefault(metric, set()).add(rule.get("alert") or rule["record"])
    unknown = {metric: sorted(where) for metric, where in used.items() if metric not in known}
    assert unknown == {}, "series the app does not export"


def test_the_checks_can_fail(stack: Stack) -> None:
    """A query on a series the app does not export has no data, and a broken one is an error:
    what the panel and rule checks above would report."""
    assert stack.query(f'rate(request_total{{job="{JOB}"}}[20s])') == []
    with pytest.raises(PromQLError):
        stack.query("sum(rate(request_count_total[20s])")
