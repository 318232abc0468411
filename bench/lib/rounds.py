"""The order of a side-by-side benchmark's rounds: A B B A ... (with more configurations, A B C
C B A ...), each one as often early as late in the run, so a trend in the machine's load (a
neighbour's job ramping up, steal) favours none of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def alternating(items: Sequence[T], rounds: int) -> list[T]:
    """Every item once per round: in order in even rounds, reversed in odd ones."""
    return [item for n in range(rounds) for item in (items if n % 2 == 0 else items[::-1])]
