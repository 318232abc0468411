"""A process's peak resident memory over an interval, read from the kernel: what the memory
benchmarks record of a server under a burst, or of one request."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path


def status_kib(pid: int, key: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS, VmHWM), 0 when it is not there."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """The process's peak RSS over an interval: VmHWM after a reset, or 50 ms samples."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.resettable = self._reset()

    def _reset(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):
                self.sampled = max(self.sampled, status_kib(self.pid, "VmRSS") * 1024)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        self._reset()
        self.sampled = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()

    def peak(self) -> int:
        with contextlib.suppress(OSError):
            if self.resettable:
                return max(self.sampled, status_kib(self.pid, "VmHWM") * 1024)
        return self.sampled
