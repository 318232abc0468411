"""How much memory this process may use: the container's cgroup limit, and its own RSS.

The limit is the smallest `memory.max` (cgroup v2) or `memory.limit_in_bytes` (cgroup v1) of the
process's own cgroup and every ancestor visible under the mount, read from the path in
`/proc/self/cgroup`. In a container the cgroup namespace makes that path `/`, so the mount root's
file (the container's own limit) is the one read; without a namespace, the container's path may
not exist under the mount, and the root's file is used as well. "max" (v2) and v1's "unlimited"
(a value near 2^63) mean no limit.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned 63-bit number; anything this large is
# no limit in practice.
_UNLIMITED = 1 << 60


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _UNLIMITED else None


def _own_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process, from /proc/self/cgroup."""
    v2: str | None = None
    v1: str | None = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _limits_up_the_tree(mount: Path, own: str | None, filename: str) -> list[int]:
    """Limits in `own`'s directory and each ancestor up to the mount root (hierarchical limits:
    the tightest one applies); the mount root's alone when `own` is not under this mount."""
    found: list[int] = []
    directory = mount / own.strip("/") if own else mount
    if not directory.is_dir():
        directory = mount
    while True:
        limit = _read_limit(directory / filename)
        if limit is not None:
            found.append(limit)
        if directory == mount or mount not in directory.parents:
            break
        directory = directory.parent
    return found


def cgroup_memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The memory limit of this process's cgroup in bytes (v2 or v1), or None without one."""
    v2_path, v1_path = _own_paths(proc_cgroup)
    limits: list[int] = []
    if (root / "cgroup.controllers").exists():  # the unified (v2) hierarchy is mounted here
        limits += _limits_up_the_tree(root, v2_path, "memory.max")
    if (root / "memory").is_dir():  # v1: the memory controller's own mount
        limits += _limits_up_the_tree(root / "memory", v1_path, "memory.limit_in_bytes")
    return min(limits) if limits else None


def resident_bytes(status: Path = Path("/proc/self/status")) -> int | None:
    """This process's resident set size (VmRSS), or None where /proc is not there."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def return_free_memory() -> bool:
    """Hand the allocator's free pages back to the OS (glibc's malloc_trim). glibc keeps freed
    memory in its heaps, so after a large decode the RSS would stay up by the size of what was
    freed; trimming after each large image keeps the RSS near what is in use. False where the
    C library has no malloc_trim (musl, macOS)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
