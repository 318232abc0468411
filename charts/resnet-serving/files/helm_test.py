"""`helm test` check, run by the chart's test pod with the app image's Python (stdlib only).

Waits for GET /ready to answer 200, then classifies a generated PNG with POST /predict and
checks the answer's shape. Exit status 0 on success; 1 with a message on stderr otherwise.
Environment: TARGET_URL (the Service URL), READY_TIMEOUT_S (default 300), TOP_K (default 3).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib


def make_png(width: int = 96, height: int = 96) -> bytes:
    """A colour gradient PNG (RGB, 8 bit), built with zlib so the check needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes((x * 255 // width, y * 255 // height, 128))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


def fail(message: str) -> int:
    print(f"helm test FAILED: {message}", file=sys.stderr)
    return 1


def wait_ready(base: str, timeout_s: float) -> str | None:
    """The /ready body once it answers 200; None when it did not within timeout_s."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=5) as response:  # noqa: S310
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(2)
    print(f"last /ready answer: {last}", file=sys.stderr)
    return None


def main() -> int:
    base = os.environ.get("TARGET_URL", "").rstrip("/")
    if not base:
        return fail("TARGET_URL is not set")
    timeout_s = float(os.environ.get("READY_TIMEOUT_S", "300"))
    top_k = int(os.environ.get("TOP_K", "3"))

    ready = wait_ready(base, timeout_s)
    if ready is None:
        return fail(f"{base}/ready did not answer 200 within {timeout_s:.0f} s")
    print(f"GET /ready: 200 {ready}")

    headers = {"Content-Type": "image/png", "Accept": "application/json"}
    api_keys = os.environ.get("API_KEYS", "")
    if api_keys:  # SERVING_API_KEYS is on: authenticate with the first key
        headers["Authorization"] = "Bearer " + api_keys.split(",")[0].strip()
    request = urllib.request.Request(  # noqa: S310
        f"{base}/predict?top_k={top_k}",
        data=make_png(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return fail(f"POST /predict answered {exc.code}: {exc.read().decode(errors='replace')}")
    except (urllib.error.URLError, OSError) as exc:
        return fail(f"POST /predict: {exc}")
    try:
        answer = json.loads(body)
    except json.JSONDecodeError:
        return fail(f"POST /predict answered {status} with a body that is not JSON: {body[:300]}")
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != top_k:
        return fail(f"expected {top_k} predictions, got: {body[:500]}")
    scores = [p.get("score") for p in predictions]
    if not all(isinstance(s, int | float) and 0.0 <= s <= 1.0 for s in scores):
        return fail(f"scores are not probabilities: {scores}")
    if scores != sorted(scores, reverse=True):
        return fail(f"predictions are not sorted by score: {scores}")
    if not all(isinstance(p.get("label"), str) and p["label"] for p in predictions):
        return fail(f"a prediction has no label: {predictions}")
    top = predictions[0]
    print(
        f"POST /predict: {status}, model {answer.get('model')}, weights {answer.get('weights')}, "
        f"top-1 {top['label']!r} ({top['score']:.3f})"
    )
    print("helm test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
