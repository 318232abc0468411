"""What a request body holds in the server, per byte of it, route by route: the factors that
app/memory/bodies.py prices bodies with (SINGLE_IMAGE_HELD, BATCH_HELD, PROTOCOL_HELD).

For each way in, a fresh `python -m app` (resnet18, random weights, the body budget set huge so
nothing waits) answers one small request to warm up, then one request carrying 9.5 MB images
that decode to almost nothing (harness.big_images.padded_png: a 32x32 PNG with a large private
chunk), so what is measured is the body alone. Recorded: the process's peak RSS growth over its
RSS before the request (VmHWM, reset just before), and that growth per byte of body.

    python -m bench.experiments.body_memory --json bench/results/body_memory.json
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

from bench.lib.memory import PeakRss
from bench.lib.results import command_line, write_result
from bench.lib.servers import serving_env
from harness.big_images import padded_png
from harness.process import ManagedProcess, app_process, free_port

MODEL = "resnet18"
IMAGE_BYTES = 9_500_000

Send = Callable[[ManagedProcess, int, list[bytes]], tuple[int, int]]  # -> (status, body bytes)


def raw(server: ManagedProcess, grpc_port: int, images: list[bytes]) -> tuple[int, int]:
    r = httpx.post(f"{server.base_url}/predict", content=images[0],
                   headers={"content-type": "image/png"}, timeout=120)  # fmt: skip
    return r.status_code, len(images[0])


def multipart(server: ManagedProcess, grpc_port: int, images: list[bytes]) -> tuple[int, int]:
    r = httpx.post(f"{server.base_url}/predict", files={"file": ("a.png", images[0], "image/png")},
                   timeout=120)  # fmt: skip
    return r.status_code, int(r.request.headers["content-length"])


def batch(server: ManagedProcess, grpc_port: int, images: list[bytes]) -> tuple[int, int]:
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    r = httpx.post(f"{server.base_url}/predict/batch", files=files, timeout=120)
    return r.status_code, int(r.request.headers["content-length"])


def _infer_url(server: ManagedProcess) -> str:
    return f"{server.base_url}/v2/models/{MODEL}/infer"


def oip_json(server: ManagedProcess, grpc_port: int, images: list[bytes]) -> tuple[int, int]:
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(images)],
              "data": [base64.b64encode(i).decode() for i in images]}  # fmt: skip
    body = json.dumps({"inputs": [tensor]}).encode()
    r = httpx.post(_infer_url(server), content=body,
                   headers={"content-type": "application/json"}, timeout=120)  # fmt: skip
    return r.status_code, len(body)


def oip_binary(server: ManagedProcess, grpc_port: int, images: list[bytes]) -> tuple[int, int]:
    """Triton's binary tensor extension: a JSON header, then each BYTES element as a 4-byte
    little-endian length and its bytes."""
    data = b"".join(struct.pack("<I", len(i)) + i for i in images)
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(images)],
              "parameters": {"binary_data_size": len(data)}}  # fmt: skip
    header = json.dumps({"inputs": [tensor]}).encode()
    r = httpx.post(_infer_url(server), content=header + data, timeout=120,
                   headers={"content-type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    return r.status_code, len(header) + len(data)


def grpc(server: ManagedProcess, grpc_port: int, images: list[bytes]) -> tuple[int, int]:
    tensor = grpcclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        client.infer(MODEL, [tensor], client_timeout=120)
    return 200, sum(len(i) + 4 for i in images)  # the message's tensor contents


WAYS: dict[str, tuple[Send, int]] = {  # name -> (sender, images per request)
    "/predict raw": (raw, 1),
    "/predict multipart": (multipart, 1),
    "/predict/batch multipart x1": (batch, 1),
    "/predict/batch multipart x4": (batch, 4),
    "/v2 infer JSON x1": (oip_json, 1),
    "/v2 infer JSON x4": (oip_json, 4),
    "/v2 infer binary x1": (oip_binary, 1),
    "/v2 infer binary x4": (oip_binary, 4),
    "gRPC ModelInfer x1": (grpc, 1),
    "gRPC ModelInfer x4": (grpc, 4),
}


def measure(name: str, log_dir: Path) -> dict[str, Any]:
    send, count = WAYS[name]
    images = [padded_png(IMAGE_BYTES, seed=i) for i in range(count)]
    grpc_port = free_port()
    env = serving_env(MODEL, SERVING_GRPC_PORT=str(grpc_port),
                      SERVING_MAX_BODY_BYTES_IN_FLIGHT=str(1 << 40))  # fmt: skip
    slug = name.replace("/", "").replace(" ", "-")
    with app_process(env, log_path=log_dir / f"{slug}.log") as server:
        server.wait_ready(timeout_s=300)
        send(server, grpc_port, [padded_png(10_000)])  # warm-up: the route's code paths run once
        time.sleep(0.5)
        before = server.rss_bytes()
        peak = PeakRss(server.pid)
        with peak.measuring():
            status, body = send(server, grpc_port, images)
        growth = peak.peak() - before
    row = {"way": name, "images": count, "status": status, "body_bytes": body,
           "rss_before_bytes": before, "peak_growth_bytes": growth,
           "held_per_body_byte": round(growth / body, 2)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", nargs="*", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="body-memory-") as tmp:
        rows = [measure(name, Path(tmp)) for name in args.ways]
    result = {
        "benchmark": "body_memory",
        "command": command_line("bench.experiments.body_memory", argv),
        "model": MODEL,
        "image_bytes": IMAGE_BYTES,
        "rows": rows,
    }
    if args.json:
        write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
