"""A memory-limited cgroup for a child process: the kernel OOM-kills it past the limit, as a
Kubernetes container's memory limit would.

A child cgroup is made under this process's own (cgroup v1 memory controller, or cgroup v2 with
the memory controller delegated), its limit set (swap off), and the command started inside it:
a shell writes its own PID into `cgroup.procs`, then execs the command, so the process never runs
a moment outside the limit. Needs write access to the cgroup tree (root, or a delegated
subtree); `available()` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_path(controller: str | None) -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller is None and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    return None


def _parent() -> tuple[Path, str] | tuple[None, str]:
    """(directory to create the child cgroup in, "v1"/"v2"), or (None, why not)."""
    v1 = ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").exists() or (v1 / "cgroup.procs").exists():
        own = _own_path("memory")
        parent = v1 / (own or "/").strip("/")
        if not parent.is_dir():
            parent = v1
        if os.access(parent, os.W_OK):
            return parent, "v1"
        return None, f"cannot write to the cgroup v1 memory hierarchy at {parent}"
    if (ROOT / "cgroup.controllers").exists():
        own = _own_path(None)
        parent = ROOT / (own or "/").strip("/")
        subtree = parent / "cgroup.subtree_control"
        try:
            if "memory" not in subtree.read_text().split():
                subtree.write_text("+memory")
        except OSError as exc:
            return None, f"cannot enable the memory controller under {parent}: {exc}"
        if os.access(parent, os.W_OK):
            return parent, "v2"
        return None, f"cannot write to the cgroup v2 hierarchy at {parent}"
    return None, "no cgroup memory controller mounted at /sys/fs/cgroup"


def available() -> tuple[bool, str]:
    """Whether a limited cgroup can be made here, and if not, why."""
    parent, how = _parent()
    if parent is None:
        return False, how
    probe = parent / f"probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError as exc:
        return False, f"cannot create a cgroup under {parent}: {exc}"
    probe.rmdir()
    return True, how


class MemoryCgroup:
    """A child cgroup with a memory limit; `wrap(command)` runs a command inside it."""

    def __init__(self, limit_bytes: int, name: str = "resnet-serving-test") -> None:
        parent, how = _parent()
        if parent is None:
            raise RuntimeError(how)
        self.version = how
        self.limit_bytes = limit_bytes
        self.path = parent / f"{name}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> MemoryCgroup:
        self.path.mkdir()
        if self.version == "v1":
            (self.path / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():  # memory + swap capped at the same figure: no swapping out
                swap.write_text(str(self.limit_bytes))
        else:
            (self.path / "memory.max").write_text(str(self.limit_bytes))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
        return self

    def __exit__(self, *exc: object) -> None:
        # A process still inside makes this fail; the caller's cleanup kills it, the dir stays.
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def wrap(self, command: Sequence[str]) -> list[str]:
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *command]

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup."""
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        try:
            text = (self.path / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_bytes(self) -> int | None:
        """The cgroup's memory high-water mark (page cache included), where the kernel keeps it."""
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int((self.path / name).read_text().strip())
        except (OSError, ValueError):
            return None
