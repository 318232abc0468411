"""What the A/B router costs: the app through the chart's nginx router, against it directly.

The same app called both ways at 1 and 10 clients, side by side in one run.

The router is real nginx running exactly the config the chart renders (ConfigMap
`<fullname>-router`, templates/_router_config.tpl), rendered offline with
`--set router.enabled=true` (no canary: every request goes to the stable) and made to run on
loopback by `loopback_config`, which rewrites addresses, ports and paths only: the upstream
`server` lines point at the app's loopback ports, the `listen` ports are free ones, and the pid
file and temporary directories go to a private work directory. Run as root (these machines),
`user root;` is added, or nginx would run its workers as `nobody`, who cannot write there; the
chart's pod runs master and workers as one non-root user, so nothing else differs. The tests of
the router (tests/router/) run the same config the same way, with `Router` from here.

One app process (random weights, the prediction cache off: bench/lib/servers.serving_env; the
requests also send `Cache-Control: no-store`) serves both configurations:
- `direct`: the clients call the app;
- `router`: the clients call nginx, which calls the app over kept-alive connections; nginx
  closes each client connection after its answer (the chart's config: keepalive_timeout 0,
  so that a reload or a graceful stop never cuts a connection a client is about to reuse).
The body is one real photograph (bench/lib/images.small_jpeg, 61 KB), sent by the closed loop of
bench/oip_load.py (one keep-alive connection per client).

Per client count, rounds alternate (`--rounds 2`: direct router, then router direct), so a shared
machine's background load falls on both alike; each round is `--warmup` seconds of the loop (not
counted) running straight into the `--seconds` counted window, and a configuration's rounds are
pooled. Before the first round, `--prime` seconds of load not measured.

Recorded per client count: each configuration's throughput and client p50/p95 (pooled and per
round), CPU ms per request of the app, nginx (master and workers) and this load generator; the
router's throughput ratio to direct and the p50 and p95 it adds (ms). The CPU (model, AMX,
AVX512-BF16, VNNI) is recorded with the result.

    python -m bench.router --json bench/results/router.json        # resnet50 (~6 min)
    python -m bench.router --model resnet18 --seconds 2 --warmup 1 --rounds 1 --prime 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.lib.images import small_jpeg
from bench.lib.load import summarise
from bench.lib.results import publish
from bench.lib.rounds import alternating
from bench.lib.servers import group_cpu_s, serving_env
from bench.oip_load import Window, closed_loop, http_senders
from bench.rolling import nginx_binary
from harness.process import ROOT, ManagedProcess, app_process, free_port, group_stat

CHART = ROOT / "charts" / "resnet-serving"
HELM = ROOT / ".tools" / "bin" / "helm"
# The release and namespace the benchmark renders: the Services' names in the config.
RELEASE = "rel"
NAMESPACE = "serving"
CONFIGS = ("direct", "router")


@dataclass(frozen=True)
class Ports:
    """The router's three listening ports, or one version's two."""

    http: int
    grpc: int = 0
    status: int = 0


# What the chart's defaults render (config.SERVING_PORT, SERVING_GRPC_PORT, router.statusPort).
CHART_PORTS = Ports(http=8000, grpc=8001, status=8081)


def service_host(role: str, release: str = RELEASE, namespace: str = NAMESPACE) -> str:
    """The in-cluster name of a version's Service in the rendered config (`stable`, `canary`)."""
    return f"{release}-resnet-serving-{role}.{namespace}.svc"


# --- the chart's config, rendered and moved to loopback -----------------------------------------


def offline_chart(into: Path) -> Path:
    """The chart through symlinks, with a stand-in for its kube-prometheus-stack dependency
    (not downloadable here; helm refuses to render without it): as tests/chart/conftest.py's
    `offline_chart` fixture builds it."""
    root = into / CHART.name
    root.mkdir()
    for entry in CHART.iterdir():
        if entry.name != "charts":
            (root / entry.name).symlink_to(entry)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    [dep] = [d for d in chart["dependencies"] if d["name"] == "kube-prometheus-stack"]
    stub = root / "charts" / dep["name"]
    stub.mkdir(parents=True)
    stub_chart = {"apiVersion": "v2", "name": dep["name"], "version": dep["version"].lstrip("~^=")}
    (stub / "Chart.yaml").write_text(yaml.safe_dump(stub_chart))
    return root


def render_router_config(set_values: Sequence[str], *, helm: Path = HELM) -> str:
    """The router's nginx.conf as `helm template` renders it with these `--set` values."""
    if not helm.is_file():
        raise RuntimeError(f"{helm} is missing: run scripts/install.sh")
    with tempfile.TemporaryDirectory(prefix="router-chart-") as tmp:
        chart = offline_chart(Path(tmp))
        home = Path(tmp) / "home"
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": str(home / "c"),
               "HELM_CONFIG_HOME": str(home / "f"), "HELM_DATA_HOME": str(home / "d")}  # fmt: skip
        args = [str(helm), "template", RELEASE, str(chart), "--namespace", NAMESPACE,
                "--show-only", "templates/router-configmap.yaml"]  # fmt: skip
        for item in set_values:
            args += ["--set", item]
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"helm template failed:\n{done.stderr}")
    [configmap] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    conf: str = configmap["data"]["nginx.conf"]
    return conf


_LISTEN = re.compile(r"^(?P<indent>\s*)listen\s+(?P<port>\d+)(?P<rest>[^;]*);\s*$")
_SERVER = re.compile(
    r"^(?P<indent>\s*)server\s+(?P<host>[A-Za-z0-9.-]+):(?P<port>\d+)(?P<rest>[^;]*);\s*$"
)
_PATH = re.compile(r"^(?P<indent>\s*)(?P<directive>pid|\w+_temp_path)\s+(?P<path>\S+);\s*$")


def loopback_config(
    conf: str,
    *,
    workdir: Path,
    listen: Ports,
    upstreams: Mapping[str, Ports],
    chart_ports: Ports = CHART_PORTS,
) -> str:
    """The rendered config, runnable here: addresses, ports and paths rewritten, nothing else.

    - `listen <chart port>` -> `listen 127.0.0.1:<listen's port>` (http, grpc, status);
    - `server <service>:<chart port> ...` (the upstreams) -> `server 127.0.0.1:<port> ...`, the
      port of that Service's entry in `upstreams` (its http or grpc one);
    - `pid` and `*_temp_path` -> the same file name in `workdir`;
    - as root, `user root;` first (see the module docstring).
    A listen port or an upstream this does not know fails, so nothing goes unrewritten."""
    listen_to = {chart_ports.http: listen.http, chart_ports.grpc: listen.grpc,
                 chart_ports.status: listen.status}  # fmt: skip
    out = []
    for line in conf.splitlines():
        if m := _LISTEN.match(line):
            port = listen_to.get(int(m["port"]))
            if not port:
                raise ValueError(f"no loopback port for {line.strip()!r}")
            line = f"{m['indent']}listen 127.0.0.1:{port}{m['rest']};"
        elif m := _SERVER.match(line):
            target = upstreams.get(m["host"])
            chart_port = int(m["port"])
            if target is None or chart_port not in (chart_ports.http, chart_ports.grpc):
                raise ValueError(f"no loopback address for {line.strip()!r}")
            port = target.http if chart_port == chart_ports.http else target.grpc
            line = f"{m['indent']}server 127.0.0.1:{port}{m['rest']};"
        elif m := _PATH.match(line):
            line = f"{m['indent']}{m['directive']} {workdir / Path(m['path']).name};"
        out.append(line)
    text = "\n".join(out) + "\n"
    if ".svc:" in text:
        raise ValueError("an in-cluster address is left in the config")
    if os.geteuid() == 0:
        # Workers stay root, as the pod's run as the master's one user (module docstring).
        text = "user root;\n" + text
    return text


class Router:
    """The chart's router config in a private nginx on loopback (own prefix, config, pid file),
    in the foreground, reloadable. `upstreams`: each Service host of the config -> the loopback
    ports of the process that plays it."""

    def __init__(
        self, workdir: Path, conf: str, upstreams: Mapping[str, Ports], *, grpc: bool = True
    ) -> None:
        self.workdir = workdir
        self.upstreams = dict(upstreams)
        self.ports = Ports(http=free_port(), grpc=free_port() if grpc else 0, status=free_port())
        self.conf_path = workdir / "nginx.conf"
        self.binary = nginx_binary()
        self.configure(conf)
        self._retired: set[int] = set()  # workers of earlier configurations
        self.process = ManagedProcess(
            [*self._nginx(), "-g", "daemon off;"],
            env={},
            log_path=workdir / "nginx.log",
            port=self.ports.status,
            ready_path="/healthz",
        )

    def _nginx(self) -> list[str]:
        """nginx with this router's prefix and config (errors to stderr: no system log)."""
        return [self.binary, "-e", "stderr", "-p", str(self.workdir), "-c", str(self.conf_path)]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def configure(self, conf: str) -> str:
        """Writes `conf` (as rendered), moved to loopback; returns what was written."""
        text = loopback_config(
            conf, workdir=self.workdir, listen=self.ports, upstreams=self.upstreams
        )
        self.conf_path.write_text(text)
        return text

    def start(self, timeout_s: float = 30.0) -> Router:
        self.process.start()
        self.process.wait_ready(timeout_s=timeout_s)
        return self

    def workers(self) -> set[int]:
        """nginx's running worker processes (its group, less the master and any zombie)."""
        members = group_stat(self.process.pid)
        return {pid for pid, f in members.items() if pid != self.process.pid and f[0] != "Z"}

    def reload(self, conf: str, timeout_s: float = 30.0) -> None:
        """`nginx -s reload` with `conf`; returns once workers of the new configuration run
        (the old ones finish their open requests and exit on their own: `settle`)."""
        before = self.workers()
        self._retired |= before
        self.configure(conf)
        subprocess.run(
            [*self._nginx(), "-s", "reload"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + timeout_s
        while not self.workers() - before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no new nginx worker after a reload:\n{self.log_text()}")
            time.sleep(0.02)

    def settle(self, timeout_s: float = 60.0) -> None:
        """Until the workers of earlier configurations have exited: every connection is then
        served by the current one."""
        deadline = time.monotonic() + timeout_s
        while self.workers() & self._retired:
            if time.monotonic() > deadline:
                raise RuntimeError(f"old nginx workers still running:\n{self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.process.log_text()

    def terminate(self) -> int:
        return self.process.terminate()

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process.proc is not None:
            self.process.terminate()


# --- the benchmark ------------------------------------------------------------------------------


@dataclass
class Round:
    config: str
    clients: int
    round: int
    latencies_s: list[float]
    failures: Counter[str]
    duration_s: float
    app_cpu_s: float
    nginx_cpu_s: float
    client_cpu_s: float


async def _window(
    url: str, body: bytes, *, clients: int, warmup_s: float, seconds: float, app_pid: int,
    nginx_pgid: int,
) -> tuple[Window, float]:  # fmt: skip
    """The closed loop (bench/oip_load.closed_loop) and nginx's CPU over its counted window."""

    async def nginx_clock() -> float:
        await asyncio.sleep(warmup_s)
        before = group_cpu_s(nginx_pgid)
        await asyncio.sleep(seconds)
        return group_cpu_s(nginx_pgid) - before

    headers = {"content-type": "image/jpeg", "cache-control": "no-store"}
    async with http_senders(url, body, headers, clients) as senders:
        window, nginx_cpu = await asyncio.gather(
            closed_loop(senders, duration_s=seconds, warmup_s=warmup_s, server_pid=app_pid),
            nginx_clock(),
        )
    return window, nginx_cpu


def pooled(rounds: list[Round]) -> dict[str, Any]:
    latencies = [x for r in rounds for x in r.latencies_s]
    failures: Counter[str] = Counter()
    for r in rounds:
        failures.update(r.failures)
    load = summarise(rounds[0].clients, sum(r.duration_s for r in rounds), latencies, failures)
    per_round = [summarise(r.clients, r.duration_s, r.latencies_s, r.failures) for r in rounds]
    ok = max(1, load.ok)

    def per_request(seconds: float) -> float:
        return round(seconds * 1000.0 / ok, 3)

    return {
        "config": rounds[0].config,
        "clients": rounds[0].clients,
        "ok": load.ok,
        "failed": load.failed,
        "failures": load.failures,
        "throughput_rps": load.throughput_rps,
        "p50_ms": load.p50_ms,
        "p95_ms": load.p95_ms,
        "round_rps": [x.throughput_rps for x in per_round],
        "round_p50_ms": [x.p50_ms for x in per_round],
        "cpu_ms_per_request": {
            "app": per_request(sum(r.app_cpu_s for r in rounds)),
            "nginx": per_request(sum(r.nginx_cpu_s for r in rounds)),
            "client": per_request(sum(r.client_cpu_s for r in rounds)),
        },
    }


def run(
    *,
    model: str = "resnet50",
    clients: Sequence[int] = (1, 10),
    seconds: float = 30.0,
    rounds: int = 2,
    warmup_s: float = 3.0,
    prime_s: float = 20.0,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = small_jpeg()
    conf = render_router_config(["router.enabled=true"])
    app_env = serving_env(model, **(env or {}))
    measured: dict[tuple[int, str], list[Round]] = {}
    schedule = alternating(CONFIGS, rounds)
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        work = Path(tmp)
        with app_process(app_env, log_path=work / "app.log") as app:
            app.wait_ready(timeout_s=900)
            grpc_port = int(app.env["SERVING_GRPC_PORT"])
            upstreams = {service_host("stable"): Ports(http=app.port, grpc=grpc_port)}
            (work / "nginx").mkdir()
            with Router(work / "nginx", conf, upstreams) as router:
                urls = {"direct": f"{app.base_url}/predict", "router": f"{router.base_url}/predict"}
                if prime_s > 0:
                    asyncio.run(_window(urls["router"], body, clients=max(clients),
                                        warmup_s=0.0, seconds=prime_s, app_pid=app.pid,
                                        nginx_pgid=router.process.pid))  # fmt: skip
                for n in clients:
                    for i, config in enumerate(schedule):
                        measure = _window(urls[config], body, clients=n, warmup_s=warmup_s,
                                          seconds=seconds, app_pid=app.pid,
                                          nginx_pgid=router.process.pid)  # fmt: skip
                        window, nginx_cpu = asyncio.run(measure)
                        r = Round(config=config, clients=n, round=i,
                                  latencies_s=window.latencies_s, failures=window.failures,
                                  duration_s=window.duration_s, app_cpu_s=window.server_cpu_s,
                                  nginx_cpu_s=nginx_cpu if config == "router" else 0.0,
                                  client_cpu_s=window.client_cpu_s)  # fmt: skip
                        measured.setdefault((n, config), []).append(r)
                        print(f"{n} clients, round {i} {config}: "
                              f"{len(r.latencies_s) / r.duration_s:.2f} req/s",
                              file=sys.stderr)  # fmt: skip
    results = []
    for n in clients:
        direct, routed = pooled(measured[(n, "direct")]), pooled(measured[(n, "router")])
        results.append({
            "clients": n,
            "direct": direct,
            "router": routed,
            "throughput_ratio": round(routed["throughput_rps"] / direct["throughput_rps"], 4)
            if direct["throughput_rps"]
            else None,
            "p50_added_ms": round(routed["p50_ms"] - direct["p50_ms"], 2),
            "p95_added_ms": round(routed["p95_ms"] - direct["p95_ms"], 2),
        })  # fmt: skip
    return {
        "model": model,
        "router_values": ["router.enabled=true"],
        "settings": app_env,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "schedule": schedule,
        "warmup_s_per_round": warmup_s,
        "prime_s": prime_s,
        "request_bytes": len(body),
        "results": results,
    }


def failed_claims(report: dict[str, Any]) -> list[str]:
    """What makes a run no measurement: failed requests, or a configuration with no answer."""
    problems = []
    for row in report["results"]:
        for config in CONFIGS:
            side = row[config]
            if side["failed"]:
                problems.append(f"{row['clients']} clients, {config}: {side['failures']}")
            if not side["ok"]:
                problems.append(f"{row['clients']} clients, {config}: nothing answered")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--clients", default="1,10", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="per configuration per round")
    parser.add_argument("--rounds", type=int, default=2, help="the order reversed every other")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per round, not counted")
    parser.add_argument(
        "--prime", type=float, default=20.0, help="seconds of unmeasured load before round one"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the app, repeatable"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c]
    report = run(model=args.model, clients=clients, seconds=args.seconds, rounds=args.rounds,
                 warmup_s=args.warmup, prime_s=args.prime,
                 env=dict(item.split("=", 1) for item in args.env))  # fmt: skip
    return publish(
        report, name="router", argv=argv, json_path=args.json, problems=failed_claims(report)
    )


if __name__ == "__main__":
    sys.exit(main())
