"""How many CPUs this process may really use.

`os.cpu_count()` reports the node's cores; in a container with a CPU limit that oversubscribes
torch's thread pool badly (64 threads fighting over a 2-CPU quota). We take the smallest of the
affinity mask and the cgroup quota.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_v2_quota(root: Path) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def _cgroup_v1_quota(root: Path) -> float | None:
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def default_torch_threads(cpus: int | None = None, *, device_type: str = "cpu") -> int:
    """torch's intra-op threads when SERVING_NUM_THREADS=0: every usable CPU but one. The one
    left over runs the event loop, HTTP parsing and image decoding; with all CPUs given to
    torch's spinning thread pool, a loaded server answered even its cheapest refusals seconds
    late (measured: docs/PERFORMANCE.md, "Threads"). On a GPU the model needs no CPU threads
    and every extra thread fights the event loop for the GIL: one."""
    if device_type == "cuda":
        return 1
    count = available_cpus() if cpus is None else cpus
    return max(1, count - 1)


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs usable by this process: affinity mask, capped by a cgroup CPU quota, at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_v2_quota(cgroup_root) or _cgroup_v1_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)
