"""The image, measured: its size (uncompressed, as `docker image inspect` reports it, and
compressed, as `docker save | gzip` gives it: about what a registry stores and a node pulls),
what each layer costs, what the largest things in it are, and how its container starts: seconds
from `docker run` to /ready answering 200 (the image already on the machine), and the memory of
the process once ready and after a few requests.

Needs the Docker engine (`scripts/cluster.sh image` starts it and builds the image):

    python -m bench.image local/resnet-serving:build [local/resnet-serving:build-gpu ...] \\
        --json bench/results/image.json

Each container runs as the chart runs the pod: read-only root, a tmpfs /tmp, 2 CPUs, the image's
own settings (its baked model), only loopback published.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.lib.images import small_jpeg
from bench.lib.results import command_line, write_result
from harness.process import free_port

DOCKER = "docker"
# Where the bulk of an image lies; `du` of each (those that exist in the image).
PLACES = (
    "/opt/venv/lib/python3.11/site-packages/*",
    "/opt/model",
    "/opt/torch",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/python3.11",
    "/usr/local/lib/python3.11",
    "/usr/share",
    "/var",
)


def docker(*args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, check=True, timeout=timeout
    )
    return done.stdout


def sizes(image: str) -> dict[str, Any]:
    save = subprocess.Popen([DOCKER, "save", image], stdout=subprocess.PIPE)
    gzip = subprocess.run(["gzip", "-c"], stdin=save.stdout, capture_output=True, check=True)
    save.wait(timeout=600)
    layers = [
        json.loads(line)
        for line in docker("history", "--no-trunc", "--format", "{{json .}}", image).splitlines()
    ]
    return {
        "bytes": int(docker("image", "inspect", "-f", "{{.Size}}", image)),
        "compressed_bytes": len(gzip.stdout),
        "layers": [
            {"size": layer["Size"], "created_by": layer["CreatedBy"][:160]}
            for layer in layers
            if layer["Size"] not in ("0B", "0")
        ],
    }


def contents(image: str) -> list[dict[str, Any]]:
    script = f"du -sk {' '.join(PLACES)} 2>/dev/null | sort -rn | head -20"
    out = docker("run", "--rm", "--entrypoint", "sh", image, "-c", script)
    rows = []
    for line in out.splitlines():
        kib, place = line.split(maxsplit=1)
        rows.append({"path": place, "mib": round(int(kib) / 1024, 1)})
    return rows


def start(image: str, requests: int) -> dict[str, Any]:
    port = free_port()
    began = time.monotonic()
    tmpfs = "/tmp"  # noqa: S108 (the container's own /tmp, as the chart's emptyDir)
    container = docker(
        "run", "-d", "--rm", "--read-only", "--tmpfs", tmpfs, "--cpus", "2",
        "-p", f"127.0.0.1:{port}:8000", image,
    ).strip()  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while True:
                if time.monotonic() - began > 600:
                    raise RuntimeError(f"{image} not ready in 600 s")
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            ready_s = time.monotonic() - began
            ready = client.get("/ready").json()
            time.sleep(1.0)
            idle = rss_mib(container)
            body = small_jpeg()
            for _ in range(requests):
                client.post(
                    "/predict", files={"file": ("x.jpg", body, "image/jpeg")}
                ).raise_for_status()
            time.sleep(2.0)
            after = rss_mib(container)
    finally:
        docker("stop", "-t", "30", container)
    return {
        "model_source": ready.get("model_source"),
        "backend": ready["backend"],
        "ready_s": round(ready_s, 2),
        "idle_rss_mib": idle,
        "rss_after_requests_mib": after,
    }


def rss_mib(container: str) -> float:
    status = docker("exec", container, "cat", "/proc/1/status")
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="image references, the first is the cpu target")
    parser.add_argument("--starts", type=int, default=3, help="container starts per image")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    measured = []
    for image in args.images:
        row: dict[str, Any] = {"image": image, **sizes(image), "largest": contents(image)}
        runs = [start(image, args.requests) for _ in range(args.starts)]
        row["starts"] = runs
        row["median"] = {
            key: statistics.median(run[key] for run in runs)
            for key in ("ready_s", "idle_rss_mib", "rss_after_requests_mib")
        }
        print(json.dumps({k: row[k] for k in ("image", "bytes", "compressed_bytes", "median")}))
        measured.append(row)
    result = {"command": command_line("bench.image", argv), "images": measured}
    if args.json:
        write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
