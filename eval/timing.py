"""Timing helper shared by the benchmarks."""
from __future__ import annotations

from typing import Callable


def alternating_rounds(methods: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call every method once per round, in dict order on even rounds and reversed on odd ones
    (ABBA), so that drift of a shared machine hits all methods alike; returns each method's
    results (seconds), one per round."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(rounds):
        for name in (list(methods) if r % 2 == 0 else list(reversed(methods))):
            times[name].append(methods[name]())
    return times
