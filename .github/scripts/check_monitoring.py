"""Check, in a cluster, that kube-prometheus-stack's Prometheus scrapes the release's pods
through the chart's ServiceMonitor and has loaded every rule group of its PrometheusRule.

Talks to Prometheus through the API server's service proxy (`kubectl get --raw`), so no port
has to be forwarded. Polls until both hold or --timeout runs out (exit status 1, with what was
last seen).

    python3 .github/scripts/check_monitoring.py --namespace resnet-serving --release resnet-serving
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any
from urllib.parse import quote, urlencode

PROMETHEUS_SERVICE_LABEL = "app=kube-prometheus-stack-prometheus"


def kubectl(*args: str) -> Any:
    """Run kubectl and parse its JSON output."""
    out = subprocess.run(  # noqa: S603 - fixed argv, no shell
        # kubectl from PATH, as the CI job sets it up
        ["kubectl", *args],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def prometheus_path(namespace: str) -> str:
    services = kubectl(
        "get", "services", "-n", namespace, "-l", PROMETHEUS_SERVICE_LABEL, "-o", "json"
    )
    items = services.get("items", [])
    if not items:
        raise SystemExit(f"check_monitoring: no Service labelled {PROMETHEUS_SERVICE_LABEL}")
    name = items[0]["metadata"]["name"]
    return f"/api/v1/namespaces/{namespace}/services/{name}:http-web/proxy"


def prom_api(base: str, endpoint: str, **params: str) -> Any:
    path = f"{base}/api/v1/{endpoint}"
    if params:
        path += "?" + urlencode(params, quote_via=quote)
    answer = kubectl("get", "--raw", path)
    if answer.get("status") != "success":
        raise RuntimeError(f"Prometheus answered {answer}")
    return answer["data"]


def expected_groups(namespace: str, release: str) -> set[str]:
    rules = kubectl("get", "prometheusrules", "-n", namespace, "-o", "json")
    groups: set[str] = set()
    for item in rules.get("items", []):
        labels = item["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/instance") == release:
            groups.update(g["name"] for g in item["spec"].get("groups", []))
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--release", required=True)
    parser.add_argument("--job", help="scrape job name (default: the release's Service name)")
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)
    job = args.job or args.release

    groups = expected_groups(args.namespace, args.release)
    if not groups:
        print("check_monitoring: FAIL: the release has no PrometheusRule groups", file=sys.stderr)
        return 1
    base = prometheus_path(args.namespace)
    query = f'up{{job="{job}", namespace="{args.namespace}"}}'
    deadline = time.monotonic() + args.timeout
    seen_up: list[str] = []
    missing: set[str] = set(groups)
    while True:
        try:
            result = prom_api(base, "query", query=query)["result"]
            seen_up = [f"{r['metric'].get('pod', '?')}={r['value'][1]}" for r in result]
            loaded = {g["name"] for g in prom_api(base, "rules")["groups"]}
            missing = groups - loaded
        except (subprocess.CalledProcessError, RuntimeError, KeyError) as exc:
            print(f"check_monitoring: not yet: {exc}", flush=True)
        else:
            if any(s.endswith("=1") for s in seen_up) and not missing:
                print(f"check_monitoring: ok: {query} -> {seen_up}; rule groups {sorted(groups)}")
                return 0
        if time.monotonic() > deadline:
            print(
                f"check_monitoring: FAIL after {args.timeout:g} s: {query} -> {seen_up}; "
                f"rule groups not loaded: {sorted(missing)}",
                file=sys.stderr,
            )
            return 1
        time.sleep(5)


if __name__ == "__main__":
    sys.exit(main())
