"""The order of a side-by-side benchmark's rounds: A B B A ... (with more configurations, A B C
C B A ...), each one as often early as late in the run, so a trend in the machine's load (a
neighbour's job ramping up, steal) favours none of them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def alternating(items: Sequence[T], rounds: int) -> list[T]:
    """Every item once per round: in order in even rounds, reversed in odd ones."""
    return [item for n in range(rounds) for item in (items if n % 2 == 0 else items[::-1])]


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / mean of a configuration's rounds: the noise between rounds alike."""
    if len(values) < 2 or not statistics.fmean(values):
        return None
    return round((max(values) - min(values)) / statistics.fmean(values), 4)


def round_figures(per_round: Sequence[Any], spread_of: str) -> dict[str, Any]:
    """Each round's throughput, p50 and p95 (objects with throughput_rps, p50_ms and p95_ms,
    such as bench.lib.load summaries), and the spread between rounds of the throughput and of
    `spread_of` ("p50" or "p95")."""
    return {
        "round_rps": [x.throughput_rps for x in per_round],
        "round_p50_ms": [x.p50_ms for x in per_round],
        "round_p95_ms": [x.p95_ms for x in per_round],
        "round_spread": {
            "throughput": spread([x.throughput_rps for x in per_round]),
            spread_of: spread([getattr(x, f"{spread_of}_ms") for x in per_round]),
        },
    }
