"""A real Prometheus server scraping two real app processes, with the chart's rendered rules.

An A/B test as the chart runs one: two app processes (`python -m app`, resnet18 with random
weights, each on a free loopback port), the stable (SERVING_MODEL_VERSION v1) and the canary
(v2, another random seed: another model), scraped under one job and told apart by the
`model_version` label the app puts on every sample. The stable's prediction cache has its shared
tier on a real redis-server on loopback, and it shadows every /predict image to the canary
(SERVING_SHADOW_URL, SERVING_SHADOW_PERCENT 100), which compares the two top-1 classes
(`shadow_comparisons_total`). Two background threads send traffic. The stable's is healthy:
predictions (the same image again and again: cache hits), client errors (400; bytes that are no
image miss both cache tiers every time) and probes. The canary's fails besides: overload
refusals of a queue of one (503 overloaded, `rejected_requests_total`) and failed image URLs
(502), so that its 5xx ratio is far above the stable's (none).
Prometheus (the Debian package's binary, a temporary config and data directory, loopback only,
scraping every second, evaluating every second) labels the targets as the chart's ServiceMonitor
would (job = the chart's full name, namespace, pod). Then:

- every expression of every dashboard panel, with the dashboard variables filled in (every pod
  of the job), returns data without a PromQL error; panels on cluster-only series are listed by
  title and skipped;
- every panel of the A/B dashboard returns a series for each version (one per version where
  its legend names only the version), and its shadow panels one for the stable, the version
  that shadows;
- every dashboard variable query finds values;
- every alert and recording rule the chart renders (with the canary, its alert's window and
  `for` shortened to 1m and 0s) evaluates without error, and every recording rule writes its
  series; ResNetServingCanaryWorse fires for the canary, on its 5xx ratio, with both versions'
  values in its description, and the stable is never the one it names;
- every series named by a dashboard or a rule is one the running apps declare on their real
  /metrics pages (or Prometheus' own, a recording rule's, or a listed cluster series).

The four processes are started and stopped here by PID; everything is bounded in time.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
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
    CANARY_ON,
    CANARY_VERSION,
    CLUSTER_SERIES,
    DASHBOARDS_DIR,
    PROMETHEUS_SERIES,
    STABLE_VERSION,
    declared_series,
    metric_names,
    panel_queries,
    panels,
    rule_groups,
    rules_of,
    variable_queries,
    write_rules_file,
)
from scripts.dashboards import CLUSTER_ONLY_PANELS, SHADOW_PANELS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RELEASE = "rel"
NAMESPACE = "serving"
JOB = f"{RELEASE}-resnet-serving"  # the chart's full name: the ServiceMonitor's job label
POD = f"{JOB}-local-0"  # the stable's
CANARY_POD = f"{JOB}-canary-local-0"
# Grafana's variables and macros, as a dashboard user with this job and all its pods selected
# would send them.
VARIABLES = {
    "$__rate_interval": "20s",
    "$__interval": "5s",
    "$__range": "5m",
    "$namespace": NAMESPACE,
    "$job": JOB,
    "$pod": f"{POD}|{CANARY_POD}",
}
DEADLINE_S = 60.0
CANARY_ALERT = "ResNetServingCanaryWorse"
# The chart's rules with the canary on; its alert's window and `for` shortened, so that it can
# fire within the test (promtool/ab.test.yaml covers the defaults).
RULE_VALUES = (
    *CANARY_ON,
    "prometheusRule.alerts.canaryWorse.window=1m",
    "prometheusRule.alerts.canaryWorse.for=0s",
)
AB_DASHBOARD = "resnet-serving-ab.json"


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


def versions(result: list[dict[str, Any]]) -> set[str]:
    return {series["metric"].get("model_version", "") for series in result}


def showing(expected: set[str]) -> Callable[[list[dict[str, Any]]], bool]:
    """Whether a query's result has a series of every expected version."""
    return lambda result: versions(result) >= expected


@dataclass
class Traffic:
    """Requests against an app until stopped; counts what it got back. `failing`: also
    requests that end in 5xx (overload refusals of a queue of one, failed image URLs)."""

    base_url: str
    failing: bool = False
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
                    healthy = (
                        client.post("/predict", files={"file": ("a.png", image, "image/png")}),
                        client.post("/predict", files={"file": ("a.png", image, "image/png")}),
                        client.post(
                            "/predict",
                            content=b"not an image",
                            headers={"content-type": "image/png"},
                        ),
                        client.get("/ready"),
                    )
                    failing = (
                        (
                            # Two images against a queue of one: 503 overloaded (queue_full).
                            client.post(
                                "/predict/batch",
                                files=[("files", ("a.png", image, "image/png"))] * 2,
                            ),
                            client.post("/predict", json={"url": dead_url}),
                            client.post("/predict", json={"url": dead_url}),
                        )
                        if self.failing
                        else ()
                    )
                    for response in (*healthy, *failing):
                        with self.lock:
                            count = self.statuses.get(response.status_code, 0)
                            self.statuses[response.status_code] = count + 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self.stop.wait(0.05)


@dataclass
class Stack:
    app: ManagedProcess  # the stable
    canary: ManagedProcess
    prometheus: ManagedProcess
    traffic: Traffic  # the stable's
    canary_traffic: Traffic
    groups: list[dict[str, Any]]
    api: httpx.Client

    def seen(self) -> set[int]:
        return self.traffic.seen() | self.canary_traffic.seen()

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (now, or at the Unix time `at`); raises on a PromQL error."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        response = self.api.get("/api/v1/query", params=params)
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_until_data(self, expr: str) -> list[dict[str, Any]]:
        return self.query_until(expr, bool)

    def query_until(
        self, expr: str, done: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        """The query's result once `done` says so, or the last one at the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            result = self.query(expr)
            if done(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


class PromQLError(AssertionError):
    pass


def prometheus_config(app_port: int, canary_port: int, rules: Path) -> dict[str, Any]:
    """One job for both versions, as the chart's one ServiceMonitor scrapes both."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"namespace": NAMESPACE, "pod": pod},
                    }
                    for port, pod in ((app_port, POD), (canary_port, CANARY_POD))
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
    groups = rule_groups(render, set_values=RULE_VALUES, release=RELEASE, namespace=NAMESPACE)
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
    canary_port = free_port()
    canary_env = {
        **env,
        "SERVING_MODEL_VERSION": CANARY_VERSION,
        "SERVING_RANDOM_SEED": "1",  # other random weights: another model
    }
    # The stable shadows every /predict image to the canary (shadow_comparisons_total).
    stable_env = {
        **env,
        "SERVING_MODEL_VERSION": STABLE_VERSION,
        "SERVING_SHADOW_URL": f"http://127.0.0.1:{canary_port}",
        "SERVING_SHADOW_PERCENT": "100",
    }
    # The prediction cache's shared tier (harness/redis_server.py: Debian's redis-server on
    # loopback), so its Redis series (REDIS_ONLY_SERIES) and panels have data.
    with ExitStack() as processes:
        redis = processes.enter_context(RedisServer(work / "redis.log"))
        stable_env["SERVING_CACHE_REDIS_URL"] = redis.url_with_password
        # The test proves the wiring, not Redis' speed: on a busy machine a PING over the 20 ms
        # default timed out now and then, and the Redis alert went pending.
        stable_env["SERVING_CACHE_REDIS_TIMEOUT_MS"] = "1000"
        canary = processes.enter_context(
            app_process(canary_env, log_path=work / "canary.log", port=canary_port)
        )
        app = processes.enter_context(app_process(stable_env, log_path=work / "app.log"))
        canary.wait_ready(timeout_s=120)
        app.wait_ready(timeout_s=120)
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(app.port, canary.port, rules)))
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
            canary_traffic = Traffic(canary.base_url, failing=True)
            threads = [
                threading.Thread(target=t.run, name=f"traffic-{name}", daemon=True)
                for name, t in (("stable", traffic), ("canary", canary_traffic))
            ]
            for thread in threads:
                thread.start()
            try:
                with httpx.Client(base_url=prometheus.base_url, timeout=10.0) as api:
                    yield Stack(app, canary, prometheus, traffic, canary_traffic, groups, api)
            finally:
                traffic.stop.set()
                canary_traffic.stop.set()
                for thread in threads:
                    thread.join(timeout=20)
            assert prometheus.terminate() == 0, prometheus.log_text()[-2000:]
        assert app.terminate() == 0
        assert canary.terminate() == 0


def test_traffic_has_successes_client_errors_and_server_errors(stack: Stack) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if {200, 400, 502, 503} <= stack.seen() and {200, 400} <= stack.traffic.seen():
            break
        time.sleep(0.2)
    assert {200, 400, 502, 503} <= stack.seen(), stack.canary_traffic.statuses
    assert {200, 400} <= stack.traffic.seen(), stack.traffic.statuses
    assert not stack.traffic.errors[:3]
    assert not stack.canary_traffic.errors[:3]


def test_prometheus_scrapes_both_versions_with_the_servicemonitor_labels(stack: Stack) -> None:
    """One job, one pod each; every sample of each pod carries its version."""
    for pod, version in ((POD, STABLE_VERSION), (CANARY_POD, CANARY_VERSION)):
        result = stack.query_until_data(
            f'up{{job="{JOB}", namespace="{NAMESPACE}", pod="{pod}"}} == 1'
        )
        assert len(result) == 1
        labelled = stack.query_until_data(
            f'count by (model_version) ({{job="{JOB}", pod="{pod}", model_version!=""}})'
        )
        assert versions(labelled) == {version}
        unlabelled = stack.query(
            f'count({{job="{JOB}", pod="{pod}", model_version="", '
            '__name__!~"up|scrape_.*|ALERTS.*"})'
        )
        assert unlabelled == [], f"{pod}: series without model_version"


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


def test_ab_panels_show_each_version(stack: Stack) -> None:
    """Every A/B panel query returns both versions' series: one per version where the legend
    names nothing else; the shadow panels one for the stable, which shadows to the canary."""
    both = {STABLE_VERSION, CANARY_VERSION}
    checked: dict[str, set[str]] = {}
    for panel in panels(dashboards()[AB_DASHBOARD]):
        for target in panel.get("targets", []):
            expected = {STABLE_VERSION} if panel["title"] in SHADOW_PANELS else both
            expr = fill(target["expr"])
            result = stack.query_until(expr, showing(expected))
            where = f"{panel['title']} [{target['refId']}]: {expr}"
            assert versions(result) == expected, where
            legend = target.get("legendFormat", "").replace("{{model_version}}", "")
            if "{{" not in legend:  # only the version tells the series apart
                assert len(result) == len(expected), where
            checked[panel["title"]] = versions(result)
    assert set(SHADOW_PANELS) <= set(checked)
    assert len(checked) >= 12


def test_canary_alert_fires_for_the_canary_on_its_errors(stack: Stack) -> None:
    """ResNetServingCanaryWorse, as the chart renders it (window 1m, for 0s here), fires in the
    real Prometheus for the canary, whose 5xx ratio is far above the stable's (none), and its
    description gives both versions' values (Prometheus' `query` in the template). The inputs,
    read at one instant, satisfy the comparison the alert makes."""
    rule = next(r for g in stack.groups for r in g["rules"] if r.get("alert") == CANARY_ALERT)

    def firing() -> list[dict[str, Any]]:
        alerts = stack.api.get("/api/v1/alerts").json()["data"]["alerts"]
        return [
            a for a in alerts if a["labels"]["alertname"] == CANARY_ALERT and a["state"] == "firing"
        ]

    deadline = time.monotonic() + DEADLINE_S
    while not firing() and time.monotonic() < deadline:
        time.sleep(0.5)
    (alert,) = firing()
    assert alert["labels"]["model_version"] == CANARY_VERSION
    assert alert["labels"]["job"] == JOB
    description = alert["annotations"]["description"]
    assert f"canary {CANARY_VERSION} against stable {STABLE_VERSION}" in description
    assert "none" not in description, description
    assert "5xx ratio 0% against" not in description, description
    # The same expression at one instant, and the recorded inputs at that instant (now: the
    # alert fired on recordings written before).
    at = time.time()

    def recorded(name: str) -> dict[str, float]:
        series = stack.query(f'{name}{{job="{JOB}", namespace="{NAMESPACE}"}}', at=at)
        return {s["metric"]["model_version"]: float(s["value"][1]) for s in series}

    errors = recorded("namespace_job_model_version:api_requests_5xx:ratio_rate1m")
    rates = recorded("namespace_job_model_version:api_requests:rate1m")
    p95 = recorded("namespace_job_model_version:request_duration_seconds:p95_rate1m")
    result = stack.query(rule["expr"], at=at)
    assert versions(result) == {CANARY_VERSION}, (errors, rates, p95)
    assert errors[CANARY_VERSION] > errors[STABLE_VERSION] + 0.02
    assert errors[CANARY_VERSION] > errors[STABLE_VERSION] * 2
    assert min(rates.values()) >= 0.1, rates


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
    """The series of both versions' /metrics pages (the stable's has the shadow's and the
    Redis', the canary's neither)."""
    declared: set[str] = set()
    for app in (stack.app, stack.canary):
        metrics = httpx.get(f"{app.base_url}/metrics", timeout=10.0)
        assert metrics.status_code == 200
        declared |= declared_series(metrics.text)
    assert "shadow_comparisons_total" in declared
    recorded = {r["record"] for r in rules_of(stack.groups) if "record" in r}
    known = declared | PROMETHEUS_SERIES | set(CLUSTER_SERIES) | recorded
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
