"""What the CPU offers: how many CPUs this process may really use, and native bf16.

`os.cpu_count()` reports the node's cores; in a container with a CPU limit that oversubscribes
the model's thread pool badly (64 threads fighting over a 2-CPU quota). We take the smallest of
the affinity mask and the cgroup quota.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """AMX (Sapphire Rapids and later) or AVX512-BF16 (Cooper Lake, Zen 4 and later): bf16
    matrix work runs natively, about twice the fp32 rate or more. Without them bf16 is emulated
    and slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & flags)


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
    """torch's intra-op threads when SERVING_NUM_THREADS=0: every usable CPU (one fewer halves
    the model's throughput on small machines: docs/PERFORMANCE.md, "Threads"); the event loop
    and decoding keep their share through the model thread's lower priority instead
    (`lower_thread_priority`). On a GPU the model needs no CPU threads, and every extra thread
    fights the event loop for the GIL: one."""
    if device_type == "cuda":
        return 1
    return available_cpus() if cpus is None else cpus


def lower_thread_priority(niceness: int) -> bool:
    """Raise the calling thread's nice value (Linux: per thread). Threads it creates afterwards,
    torch's OpenMP pool included, inherit it. A busy model then yields the CPU to the event loop
    and the decoders whenever they have work, and uses all of it otherwise. Raising niceness
    needs no privilege; returns False where the platform refuses."""
    if niceness <= 0:
        return True
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + niceness))
    except (AttributeError, OSError):
        return False
    return True


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
