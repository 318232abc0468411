"""The sweep as a picture: throughput and p95 latency against concurrency, per configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def plot_sweep(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for config in configs:
        points = sorted((r for r in rows if r["config"] == config), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in points]
        left.plot(xs, [r["throughput_rps"] for r in points], marker="o", label=config)
        # A point where nothing was answered has no latency (its 0 is not a measurement).
        answered = [r for r in points if r.get("ok", 1) > 0]
        right.plot([r["concurrency"] for r in answered], [r["p95_ms"] for r in answered],
                   marker="o", label=config)  # fmt: skip
    for axis, label in ((left, "throughput (requests/s)"), (right, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    right.set_yscale("log")
    right.axhline(100, color="grey", linestyle="--", linewidth=1)
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
