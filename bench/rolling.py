"""Zero-downtime rolling restart, the way the chart's RollingUpdate does it, with real parts:
replicas of the app behind a real nginx, continuous /predict load through nginx, and each
replica replaced in turn:

1. start the replacement (maxSurge 1) and wait for its /ready;
2. add it to nginx's upstream, remove the old one, reload nginx (endpoints update);
3. wait the preStop pause, then SIGTERM the old replica; it drains and must exit 0.

By default nginx retries nothing and the preStop pause is 0 s: requests are still running on
the old replica when it gets SIGTERM, and each must be answered by it (a replica that dropped
them would fail the run). `--abrupt` goes further: the old replica gets SIGTERM while nginx still
sends it new requests, and leaves the upstream only once it has exited; new work is refused (503
or a refused connection) and nginx, configured as we recommend for production, retries it.

Every request's outcome is counted; the run passes with zero failed requests.

    python -m bench.rolling --replicas 2 --json bench/results/rolling.json

"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.lib.images import small_jpeg
from harness.process import ManagedProcess, app_process, free_port

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


def nginx_binary() -> str:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("nginx not found: run scripts/install.sh (Debian/Ubuntu package nginx)")


# nginx's retry policy. STRICT retries nothing: a request that reaches a replica gets that
# replica's answer, so a replica that drops work on SIGTERM fails the run. RETRY is what we
# recommend in production (docs/DEPLOYMENT.md): connection errors, and 502/503 even for POST,
# because this app's 503 means the request was not processed.
STRICT = "off"
RETRY = "error timeout http_502 http_503 non_idempotent"


def nginx_config(
    workdir: Path, listen_port: int, upstream_ports: list[int], next_upstream: str = STRICT
) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
    # As root, nginx would switch its workers to `nobody`, who cannot write our temp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    client_max_body_size 20m;
    upstream app {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        # A connection per client request (`Connection: close`). The upstream changes by reload,
        # and a reload makes the old worker close its idle client keep-alive connections at
        # once: a POST a client had just sent on one was reset before any replica saw it (and a
        # client may not resend a POST by itself), which failed runs in which every replica did
        # its part. nginx 1.27.4's keepalive_min_timeout would avoid it; Debian's 1.22 has none.
        # The upstream side keeps its keep-alive: a draining replica's closes are on trial.
        keepalive_timeout 0;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream {next_upstream};
            proxy_next_upstream_tries 3;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class Nginx:
    """A private nginx (own prefix, config, pid file) in the foreground, reloadable."""

    def __init__(self, workdir: Path, upstream_ports: list[int], next_upstream: str) -> None:
        self.workdir = workdir
        self.next_upstream = next_upstream
        self.port = free_port()
        self.conf = workdir / "nginx.conf"
        self.binary = nginx_binary()
        self.write(upstream_ports)
        self.process = ManagedProcess(
            [self.binary, "-p", str(workdir), "-c", str(self.conf), "-g", "daemon off;"],
            env={},
            log_path=workdir / "nginx.out",
            port=self.port,
            ready_path="/ready",
        )

    def write(self, upstream_ports: list[int]) -> None:
        self.conf.write_text(
            nginx_config(self.workdir, self.port, upstream_ports, self.next_upstream)
        )

    def reload(self, upstream_ports: list[int]) -> None:
        self.write(upstream_ports)
        subprocess.run(
            [self.binary, "-p", str(self.workdir), "-c", str(self.conf), "-s", "reload"],
            check=True,
            capture_output=True,
        )
        time.sleep(0.2)  # new workers take over; old ones finish their requests


@dataclass
class RollingReport:
    replicas: int
    clients: int
    requests: int = 0
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    replica_exit_codes: list[int] = field(default_factory=list)
    duration_s: float = 0.0
    steps: list[str] = field(default_factory=list)
    # Requests answered between a new replica's start and the old one's exit, per replacement.
    answered_during_replacement: list[int] = field(default_factory=list)


async def _load(url: str, stop: asyncio.Event, clients: int, outcomes: Counter[str]) -> None:
    body = small_jpeg()
    async with httpx.AsyncClient(timeout=60) as client:

        async def worker() -> None:
            while not stop.is_set():
                try:
                    response = await client.post(
                        url, content=body, headers={"content-type": "image/jpeg"}
                    )
                    outcomes[
                        "ok" if response.status_code == 200 else f"http_{response.status_code}"
                    ] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(clients)))


def rolling_restart(
    *,
    replicas: int = 2,
    clients: int = 4,
    model: str = "resnet18",
    pre_stop_s: float = 0.0,
    settle_s: float = 2.0,
    abrupt: bool = False,
    threads: int = 1,
    workdir: Path | None = None,
) -> RollingReport:
    # The cache off (serving_env's reason): every request of the load runs the model.
    env = {"SERVING_MODEL_NAME": model, "SERVING_MODEL_WEIGHTS": "random",
           "SERVING_NUM_THREADS": str(threads), "SERVING_LOG_LEVEL": "warning",
           "SERVING_CACHE_BYTES": "0"}  # fmt: skip
    report = RollingReport(replicas=replicas, clients=clients)
    with tempfile.TemporaryDirectory(prefix="rolling-") as tmp:
        work = workdir or Path(tmp)
        serial = iter(range(1000))

        def replica() -> ManagedProcess:
            proc = app_process(env, log_path=work / f"replica-{next(serial)}.log").start()
            proc.wait_ready()
            return proc

        live = [replica() for _ in range(replicas)]
        nginx = Nginx(work, [p.port for p in live], RETRY if abrupt else STRICT)
        nginx.process.start()
        try:
            nginx.process.wait_ready(timeout_s=30)

            async def scenario() -> Counter[str]:
                outcomes: Counter[str] = Counter()
                stop = asyncio.Event()
                load = asyncio.create_task(
                    _load(f"{nginx.process.base_url}/predict", stop, clients, outcomes)
                )
                await asyncio.sleep(settle_s)
                for index in range(replicas):
                    old = live[index]
                    before = sum(outcomes.values())
                    new = await asyncio.to_thread(replica)
                    report.steps.append(f"replica {new.port} ready")
                    live[index] = new
                    if abrupt:
                        both = [p.port for p in live] + [old.port]
                        await asyncio.to_thread(nginx.reload, both)
                        report.steps.append(f"nginx: {new.port} in, {old.port} still in")
                    else:
                        await asyncio.to_thread(nginx.reload, [p.port for p in live])
                        report.steps.append(f"nginx: {old.port} out, {new.port} in")
                        await asyncio.sleep(pre_stop_s)
                    code = await asyncio.to_thread(old.terminate, 60.0)
                    report.replica_exit_codes.append(code)
                    report.answered_during_replacement.append(sum(outcomes.values()) - before)
                    report.steps.append(f"replica {old.port} drained, exit {code}")
                    if abrupt:
                        await asyncio.to_thread(nginx.reload, [p.port for p in live])
                        report.steps.append(f"nginx: {old.port} out")
                    await asyncio.sleep(settle_s)
                stop.set()
                await load
                return outcomes

            started = time.monotonic()
            outcomes = asyncio.run(scenario())
            report.duration_s = round(time.monotonic() - started, 1)
        finally:
            nginx.process.terminate()
            for proc in live:
                proc.terminate()
    report.ok = outcomes.pop("ok", 0)
    report.failures = dict(outcomes)
    report.failed = sum(outcomes.values())
    report.requests = report.ok + report.failed
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--abrupt", action="store_true", help="SIGTERM while still in nginx")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = rolling_restart(
        replicas=args.replicas, clients=args.clients, model=args.model, abrupt=args.abrupt
    )
    out: dict[str, Any] = {
        "command": "python -m bench.rolling "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        **asdict(report),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if report.failed == 0 and set(report.replica_exit_codes) <= {0} else 1


if __name__ == "__main__":
    sys.exit(main())
