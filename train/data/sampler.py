"""Samplers whose order is a pure function of (seed, position, rank): exact resume.

Micro-batch ``position`` of rank ``r`` among ``W`` is global micro-batch
``g = position * W + r``; epoch ``e`` visits the records in the order of a
permutation drawn from ``seed + e``. Nothing depends on what ran before, so a
resumed run sees exactly the batches the interrupted run would have seen.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from unified_ar.train.data.bad import BadData, BadDataError, BadRecord


def epoch_permutation(num_records: int, seed: int, epoch: int) -> np.ndarray:
    """Order of the records in ``epoch``: ``int64 [num_records]``."""
    return np.random.default_rng([seed, epoch]).permutation(num_records)


class _CountedBatches:
    """The samplers' data counters: ``counters`` (bad records plus the collator's truncation
    counts, logged and checkpointed) and ``load_counters`` (resume). Subclasses set ``bad``
    and ``counted_collate`` (the collate object whose ``counters`` join in, if it has any)."""

    bad: BadData
    counted_collate: object

    def _collate_counters(self) -> dict[str, int]:
        return getattr(self.counted_collate, "counters", None) or {}

    @property
    def counters(self) -> dict[str, int]:
        """The data counters: bad records plus the collator's (truncations), as one new dict."""
        return {**self.bad.counters, **self._collate_counters()}

    def load_counters(self, saved: dict[str, int]) -> None:
        """Restore counters from a checkpoint into their owners (resume)."""
        extra = self._collate_counters()
        for key, value in saved.items():
            owner = self.bad.counters if key in self.bad.counters else extra if key in extra else None
            if owner is None:
                raise KeyError(f"checkpoint data counter {key!r} is unknown to this data pipeline")
            owner[key] = value


class MapBatches(_CountedBatches):
    """Micro-batches of ``micro_batch_size`` records from an indexable ``dataset``.

    ``dataset[i]`` returns a record or raises :class:`BadRecord` (skipped, counted in
    ``bad``); ``collate(records, key)`` makes the batch dict, ``key`` (the global
    micro-batch index) seeding any randomness in it (e.g. caption dropout). The last incomplete
    micro-batch of each epoch is dropped so every rank gets the same count."""

    def __init__(self, dataset: Sequence, collate: Callable[[list, int], dict], micro_batch_size: int,
                 seed: int, bad: BadData | None = None):
        self.dataset = dataset
        self.collate = collate
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.bad = bad or BadData()
        self.counted_collate = collate

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
            key = position * world_size + rank
            indices = order[(offset * world_size + rank) * self.micro_batch_size:][:self.micro_batch_size]
            records = load_records(self.dataset, indices, self.bad, key)
            position += 1
            yield position, self.collate(records, key)


def load_records(dataset: Sequence, indices: Sequence[int], bad: BadData, position: int,
                 allow_empty: bool = False) -> list:
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
    if not records and not allow_empty:
        raise BadDataError(f"micro-batch {position}: every record is bad: " + "; ".join(errors))
    return records


class PackedBatches(_CountedBatches):
    """Packed micro-batches: ``rows`` rows of up to ``collator.config.max_length`` tokens each.

    Record lengths come from ``dataset.meta(i)`` (no image loading) through
    ``collator.length``; each epoch's packing plan (:func:`plan_packing`) is a pure
    function of (lengths, seed, epoch), and global micro-batch ``g = position * W + rank``
    is taken from the plans in order, so resume is exact. Each epoch's plan is cut to a
    multiple of ``W`` micro-batches so that ranks stay in step."""

    def __init__(self, dataset: Sequence, collator: Any, rows: int, seed: int, bad: BadData | None = None):
        self.dataset = dataset
        self.collator = collator
        self.rows = rows
        self.seed = seed
        self.bad = bad or BadData()
        self.counted_collate = collator
        self._lengths: np.ndarray | None = None
        self._plans: dict[int, list] = {}

    def lengths(self) -> np.ndarray:
        """Tokens of every record (0 for a record whose metadata is bad: it is skipped when loaded)."""
        if self._lengths is None:
            lengths = np.zeros(len(self.dataset), dtype=np.int64)
            for i in range(len(self.dataset)):
                try:
                    lengths[i] = self.collator.length(self.dataset.meta(i))
                except BadRecord:
                    lengths[i] = 0
            self._lengths = lengths
        return self._lengths

    def plan(self, epoch: int, world_size: int) -> list[list[list[int]]]:
        if epoch not in self._plans:
            from unified_ar.train.collate import plan_packing

            order = epoch_permutation(len(self.dataset), self.seed, epoch)
            cfg = self.collator.config
            batches = plan_packing(self.lengths(), order, self.rows, cfg.max_length, cfg.pack_lookahead)
            self._plans = {epoch: batches[: len(batches) // world_size * world_size]}
            if not self._plans[epoch]:
                raise ValueError(f"dataset of {len(self.dataset)} records packs into fewer micro-batches "
                                 f"than the {world_size} ranks")
        return self._plans[epoch]

    def iter_from(self, position: int, rank: int, world_size: int) -> Iterator[tuple[int, dict]]:
        epoch, first = 0, 0  # `first`: global micro-batch index where `epoch` starts
        while True:
            key = position * world_size + rank
            while key >= first + len(self.plan(epoch, world_size)):
                first += len(self.plan(epoch, world_size))
                epoch += 1
            rows = self.plan(epoch, world_size)[key - first]
            loaded = [load_records(self.dataset, row, self.bad, key, allow_empty=True) for row in rows]
            if not any(loaded):
                raise BadDataError(f"micro-batch {key}: every record is bad")
            position += 1
            yield position, self.collator.pack([row for row in loaded if row], key)


class StreamBatches(_CountedBatches):
    """Micro-batches from a streaming source (``source.stream(seed, epoch, rank, world_size, buffer)``,
    e.g. a ``CaptionSource(..., streaming=True)``), for data that does not fit on disk.

    Each micro-batch consumes ``micro_batch_size`` records of this rank's stream (bad
    ones are counted and left out). A stream cannot seek, so resuming at ``position``
    re-reads and discards the first ``position * micro_batch_size`` records: exact, but
    the skip costs reading them."""

    def __init__(self, source: Any, collate: Callable[[list, int], dict], micro_batch_size: int, seed: int,
                 buffer_size: int = 1000, bad: BadData | None = None):
        self.source = source
        self.collate = collate
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.buffer_size = buffer_size
        self.bad = bad or BadData()
        self.counted_collate = collate

    def iter_from(self, position: int, rank: int, world_size: int) -> Iterator[tuple[int, dict]]:
        skip, epoch, group, errors = position * self.micro_batch_size, 0, [], []
        while True:
            empty = True
            for item in self.source.stream(self.seed, epoch, rank, world_size, self.buffer_size):
                empty = False
                if skip:
                    skip -= 1
                    continue
                self.bad.seen()
                if isinstance(item, BadRecord):
                    errors.append(str(item))
                    self.bad.bad(item)
                else:
                    group.append(item)
                if len(group) + len(errors) == self.micro_batch_size:
                    if not group:
                        raise BadDataError(f"micro-batch {position}: every record is bad: " + "; ".join(errors))
                    key = position * world_size + rank
                    position += 1
                    yield position, self.collate(group, key)
                    group, errors = [], []
            if empty:
                raise ValueError(f"rank {rank}: the stream of {self.source!r} is empty")
            epoch += 1
