"""bench/router.py works end to end (a short run: its figures are the recorded result's, never
asserted here): the chart's router config on loopback in front of one app, both ways measured,
every request answered, the machine recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.router import CHART_PORTS, Ports, loopback_config, service_host
from helpers.process import run_module
from helpers.tools import tool


@pytest.mark.slow
def test_a_short_run_measures_both_ways(tmp_path: Path) -> None:
    tool("nginx")
    out = tmp_path / "router.json"
    args = ["--model", "resnet18", "--clients", "1,2", "--seconds", "1", "--warmup", "0.5",
            "--rounds", "1", "--prime", "0", "--json", str(out)]  # fmt: skip
    completed = run_module("bench.router", *args)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["command"].startswith("python -m bench.router ")
    assert report["machine"]["cpu"]
    assert [row["clients"] for row in report["results"]] == [1, 2]
    for row in report["results"]:
        for config in ("direct", "router"):
            assert row[config]["ok"] > 0
            assert row[config]["failed"] == 0
        assert row["throughput_ratio"] > 0
        assert row["router"]["cpu_ms_per_request"]["nginx"] >= 0


RENDERED = """\
pid /tmp/nginx.pid;
http {
    client_body_temp_path /tmp/nginx-client-body;
    # a comment about /tmp stays
    upstream stable_http {
        server rel-resnet-serving-stable.serving.svc:8000 max_fails=0;
        keepalive 32;
    }
    upstream canary_grpc {
        server rel-resnet-serving-canary.serving.svc:8001 max_fails=0;
        server rel-resnet-serving-stable.serving.svc:8001 max_fails=0 backup;
    }
    server {
        listen 8000;
    }
    server {
        listen 8001 http2;
    }
    server {
        listen 8081;
    }
}
"""


def test_loopback_config_rewrites_addresses_ports_and_paths_only(tmp_path: Path) -> None:
    upstreams = {service_host("stable"): Ports(http=5001, grpc=5002),
                 service_host("canary"): Ports(http=6001, grpc=6002)}  # fmt: skip
    text = loopback_config(
        RENDERED, workdir=tmp_path, listen=Ports(http=7000, grpc=7001, status=7081),
        upstreams=upstreams,
    )  # fmt: skip
    changed = [line for line in text.splitlines() if line not in RENDERED.splitlines()]
    assert [line.strip() for line in changed if line != "user root;"] == [
        f"pid {tmp_path}/nginx.pid;",
        f"client_body_temp_path {tmp_path}/nginx-client-body;",
        "server 127.0.0.1:5001 max_fails=0;",
        "server 127.0.0.1:6002 max_fails=0;",
        "server 127.0.0.1:5002 max_fails=0 backup;",
        "listen 127.0.0.1:7000;",
        "listen 127.0.0.1:7001 http2;",
        "listen 127.0.0.1:7081;",
    ]
    # Every other line is as rendered, in order.
    kept = [line for line in text.splitlines() if line in RENDERED.splitlines()]
    assert len(kept) + len(changed) == len(text.splitlines())
    assert Ports(http=8000, grpc=8001, status=8081) == CHART_PORTS


def test_loopback_config_refuses_what_it_cannot_place(tmp_path: Path) -> None:
    only_stable = {service_host("stable"): Ports(http=5001, grpc=5002)}
    with pytest.raises(ValueError, match="canary"):
        loopback_config(RENDERED, workdir=tmp_path, listen=Ports(7000, 7001, 7081),
                        upstreams=only_stable)  # fmt: skip
    with pytest.raises(ValueError, match="listen 8081"):
        loopback_config(RENDERED, workdir=tmp_path, listen=Ports(7000, 7001, 0),
                        upstreams={**only_stable, service_host("canary"): Ports(1, 2)})  # fmt: skip
