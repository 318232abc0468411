"""Work timed in process, for the benchmarks without HTTP (ceilings, decode cost, the torch
paths explored): the median of repeated runs, which a shared machine's bursts of other work move
less than a mean."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_s(work: Callable[[], object], seconds: float, *, at_least: int = 3) -> tuple[float, int]:
    """`work()` again and again for `seconds`, and at least `at_least` times: the median seconds
    of one run, and how many runs."""
    timings: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(timings) < at_least:
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), len(timings)
