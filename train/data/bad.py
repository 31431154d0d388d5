"""Bad records: skipped and counted, the first few named, the run stopped above a fraction.

A source raises :class:`BadRecord` (naming the record: file and line / index /
path) for an unreadable image, a missing file, a malformed record or an empty
conversation; samplers catch it, skip the record and tell the :class:`BadData`
tracker, which raises :class:`BadDataError` once the bad fraction passes the limit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

LOG = logging.getLogger("unified_ar.train.data")


class BadRecord(Exception):
    """One record cannot be used. ``record`` names it (e.g. ``captions.jsonl:17``)."""

    def __init__(self, record: str, reason: str):
        super().__init__(f"{record}: {reason}")
        self.record = record
        self.reason = reason


class BadDataError(RuntimeError):
    """Too many bad records: the data, not the model, needs fixing."""


@dataclass
class BadData:
    """Counts records seen and skipped. Above ``max_fraction`` (after ``min_records`` seen) it raises.

    ``counters`` is what the loop logs and checkpoints."""

    max_fraction: float = 0.01
    min_records: int = 20
    name_first: int = 5
    counters: dict[str, int] = field(default_factory=lambda: {"records_seen": 0, "bad_records": 0})
    first_bad: list[str] = field(default_factory=list)

    def seen(self, count: int = 1) -> None:
        self.counters["records_seen"] += count

    def bad(self, error: BadRecord) -> None:
        self.counters["bad_records"] += 1
        if len(self.first_bad) < self.name_first:
            self.first_bad.append(str(error))
            LOG.warning("skipping bad record %s", error)
        seen, bad = self.counters["records_seen"], self.counters["bad_records"]
        if seen >= self.min_records and bad > self.max_fraction * seen:
            raise BadDataError(
                f"{bad} of {seen} records are bad ({bad / seen:.1%} > data.max_bad_fraction "
                f"{self.max_fraction:.1%}); first: {'; '.join(self.first_bad)}")
