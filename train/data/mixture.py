"""Weighted mixtures of indexable sources (e.g. 50/50 generation and comprehension)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class Mixture:
    """Index ``i`` -> a record of source ``k`` drawn with probability ``weights[k]``.

    Both the source and the record within it are drawn from ``rng([seed, i])``: a pure
    function of the index, so shuffling, sharding and resume work as for one source.
    ``length`` (default: the sources' total) is the nominal epoch size."""

    def __init__(self, sources: Sequence, weights: Sequence[float], seed: int, length: int | None = None):
        if len(sources) != len(weights) or not sources:
            raise ValueError(f"Mixture: {len(sources)} sources but {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"Mixture: weights must be >= 0 with a positive sum, got {list(weights)}")
        empty = [i for i, s in enumerate(sources) if len(s) == 0]
        if empty:
            raise ValueError(f"Mixture: source(s) {empty} are empty")
        self.sources = list(sources)
        self.cumulative = np.cumsum(np.asarray(weights, dtype=np.float64) / sum(weights))
        self.seed = seed
        self.length = length if length is not None else sum(len(s) for s in sources)

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """(source, record within it) of mixture index ``index``."""
        u, v = np.random.default_rng([self.seed, index]).random(2)
        k = min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.sources) - 1)
        return k, int(v * len(self.sources[k]))

    def meta(self, index: int):
        k, j = self.locate(index)
        return self.sources[k].meta(j)

    def __getitem__(self, index: int):
        k, j = self.locate(index)
        return self.sources[k][j]
