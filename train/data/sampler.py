"""Samplers whose order is a pure function of (seed, position, rank): exact resume.

Micro-batch ``position`` of rank ``r`` among ``W`` is global micro-batch
``g = position * W + r``; epoch ``e`` visits the records in the order of a
permutation drawn from ``seed + e``. Nothing depends on what ran before, so a
resumed run sees exactly the batches the interrupted run would have seen.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from unified_ar.train.data.bad import BadData, BadDataError, BadRecord


def epoch_permutation(num_records: int, seed: int, epoch: int) -> np.ndarray:
    """Order of the records in ``epoch``: ``int64 [num_records]``."""
    return np.random.default_rng([seed, epoch]).permutation(num_records)


class MapBatches:
    """Micro-batches of ``micro_batch_size`` records from an indexable ``dataset``.

    ``dataset[i]`` returns a record or raises :class:`BadRecord` (skipped, counted in
    ``bad``); ``collate(records)`` makes the batch dict. The last incomplete
    micro-batch of each epoch is dropped so every rank gets the same count."""

    def __init__(self, dataset: Sequence, collate: Callable[[list], dict], micro_batch_size: int,
                 seed: int, bad: BadData | None = None):
        self.dataset = dataset
        self.collate = collate
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.bad = bad or BadData()

    @property
    def counters(self) -> dict[str, int]:
        return self.bad.counters

    def iter_from(self, position: int, rank: int, world_size: int) -> Iterator[tuple[int, dict]]:
        per_epoch = len(self.dataset) // (self.micro_batch_size * world_size)
        if per_epoch == 0:
            raise ValueError(f"dataset of {len(self.dataset)} records is smaller than one global batch "
                             f"({self.micro_batch_size} x {world_size} ranks)")
        order, order_epoch = None, -1
        while True:
            epoch, offset = divmod(position, per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_permutation(len(self.dataset), self.seed, epoch), epoch
            start = (offset * world_size + rank) * self.micro_batch_size
            indices = order[start:start + self.micro_batch_size]
            position += 1
            yield position, self.collate(load_records(self.dataset, indices, self.bad, position - 1))


def load_records(dataset: Sequence, indices: Sequence[int], bad: BadData, position: int) -> list:
    """``dataset[i]`` for each index, skipping (and counting) bad records.

    A micro-batch whose records are all bad is an error: skipping it on one rank
    would leave the ranks out of step."""
    records, errors = [], []
    for index in indices:
        bad.seen()
        try:
            records.append(dataset[int(index)])
        except BadRecord as error:
            errors.append(str(error))
            bad.bad(error)
    if not records:
        raise BadDataError(f"micro-batch {position}: every record is bad: " + "; ".join(errors))
    return records
