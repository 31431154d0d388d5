"""Samples -> the training batch dict of docs/CONTRACTS.md, with or without sequence packing.

Sequences are laid out by :mod:`unified_ar.sequences` (chat template, loss masks on
assistant turns and image ids); this module adds caption dropout (seeded, so a
resumed run drops the same captions), truncation (counted) and packing: several
samples share a row, ``position_ids`` restart at 0 for each, ``segment_ids`` name
the sample (``-1`` on padding) so that the model attends within a sample only.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from unified_ar.sequences import IGNORE, Example, comprehension_example, generation_example, text_example
from unified_ar.train.data.sources import Sample
from unified_ar.vocab import VocabLayout


@dataclass
class CollateConfig:
    max_length: int = 512  # tokens per row (and per sample)
    caption_dropout: float = 0.1  # probability a caption becomes the unconditional prompt (CFG)
    pack: bool = True
    pack_lookahead: int = 32  # samples considered for filling a packed micro-batch
    # laid-out conversations kept for reuse (the chat template renders every turn's prefix: ~2-3 ms
    # for six turns, a tenth of a CPU demo step); 0 turns the cache off
    conversation_cache: int = 50_000

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if self.pack_lookahead < 1:
            raise ValueError("pack_lookahead must be >= 1")
        if self.conversation_cache < 0:
            raise ValueError(f"conversation_cache must be >= 0, got {self.conversation_cache}")


@dataclass
class Laid:
    """One sample laid out: its example and the codes of its comprehension images, ``[N]`` each."""

    example: Example
    images: list[np.ndarray]


class Collator:
    """Builds examples and batches. ``counters`` (truncated / too_long) are logged by the loop."""

    def __init__(self, layout: VocabLayout, tokenizer, num_image_tokens: int, config: CollateConfig, seed: int):
        self.layout = layout
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.config = config
        self.seed = seed
        self.counters = {"truncated": 0, "too_long": 0}
        self._conversations: OrderedDict[str, Example] = OrderedDict()  # least recently used first

    def example(self, sample: Sample, drop_caption: bool = False) -> Laid:
        """Lay out one loaded sample (codes present)."""
        n = self.num_image_tokens
        for codes in sample.images:
            if codes.shape != (n,):
                raise ValueError(f"{sample.record}: image codes have shape {codes.shape}, the model expects "
                                 f"({n},); pretokenize at the model's image size")
        if sample.kind == "generation":
            ex = generation_example(self.layout, self.tokenizer, sample.caption, sample.images[0], drop_caption)
            return Laid(ex, [])
        if sample.kind == "comprehension":
            return Laid(self._conversation(sample.conversation), list(sample.images))
        return Laid(text_example(self.layout, self.tokenizer, sample.text), [])

    def _conversation(self, conversation: list[dict]) -> Example:
        """The laid-out conversation (it does not depend on the image codes), from a bounded LRU
        cache keyed by its content. Cached examples are shared: callers never modify them."""
        limit = self.config.conversation_cache
        if not limit:
            return comprehension_example(self.layout, self.tokenizer, conversation, self.num_image_tokens)
        key = json.dumps(conversation, sort_keys=True)
        if key in self._conversations:
            self._conversations.move_to_end(key)
            return self._conversations[key]
        example = comprehension_example(self.layout, self.tokenizer, conversation, self.num_image_tokens)
        self._conversations[key] = example
        if len(self._conversations) > limit:
            self._conversations.popitem(last=False)
        return example

    def length(self, meta: Sample) -> int:
        """Tokens of ``meta`` (a sample without codes) with its caption kept: what packing plans with."""
        stub = Sample(meta.kind, meta.record, meta.caption, meta.conversation, meta.text,
                      [np.zeros(self.num_image_tokens, dtype=np.int64)] * meta.num_images, meta.num_images)
        return len(self.example(stub).example.input_ids)

    def drops(self, key: int, count: int) -> np.ndarray:
        """Caption-dropout decisions ``bool [count]`` for micro-batch ``key``: a pure function of (seed, key)."""
        return np.random.default_rng([self.seed, key, 7]).random(count) < self.config.caption_dropout

    def fit(self, laid: Laid, record: str) -> Laid | None:
        """Truncate to ``max_length`` (counted); None (counted) when that would cut an image."""
        ex, limit = laid.example, self.config.max_length
        if len(ex.input_ids) <= limit:
            return laid
        cut = torch.tensor(ex.input_ids[limit:])
        specials = [self.layout.image_start_id, self.layout.image_end_id, self.layout.image_placeholder_id]
        if bool(self.layout.is_image_id(cut).any()) or any(int(s) in cut.tolist() for s in specials):
            self.counters["too_long"] += 1
            return None
        self.counters["truncated"] += 1
        return Laid(Example(ex.input_ids[:limit], ex.labels[:limit], ex.num_images), laid.images)

    def __call__(self, samples: list[Sample], key: int) -> dict:
        """One sample per row (no packing). ``key`` seeds caption dropout."""
        return self.pack([[s] for s in samples], key)

    def pack(self, rows: list[list[Sample]], key: int) -> dict:
        """Samples grouped into rows -> batch dict (see :func:`batch_from_rows`)."""
        drops = self.drops(key, sum(len(r) for r in rows))
        laid_rows, k = [], 0
        for row in rows:
            laid_row = []
            for sample in row:
                laid = self.fit(self.example(sample, bool(drops[k]) and sample.kind == "generation"), sample.record)
                k += 1
                if laid is not None:
                    laid_row.append(laid)
            if laid_row:
                laid_rows.append(laid_row)
        if not laid_rows:
            raise ValueError(f"micro-batch {key}: every sample is longer than max_length {self.config.max_length}")
        return batch_from_rows(laid_rows, self.layout.pad_id, self.num_image_tokens)


def batch_from_rows(rows: list[list[Laid]], pad_id: int, num_image_tokens: int) -> dict:
    """Rows of laid-out samples -> the contract's batch dict, padded to the longest row:

    ``input_ids, labels, attention_mask, position_ids, segment_ids [B,L] long`` and
    ``image_codes [M,N] long`` (comprehension images in order of appearance, row-major)."""
    width = max(sum(len(s.example.input_ids) for s in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.full(shape, -1, dtype=torch.long)
    images: list[np.ndarray] = []
    for r, row in enumerate(rows):
        start = 0
        for segment, laid in enumerate(row):
            n = len(laid.example.input_ids)
            input_ids[r, start:start + n] = torch.tensor(laid.example.input_ids)
            labels[r, start:start + n] = torch.tensor(laid.example.labels)
            position_ids[r, start:start + n] = torch.arange(n)
            segment_ids[r, start:start + n] = segment
            images.extend(laid.images)
            start += n
    image_codes = (torch.from_numpy(np.stack(images)).long() if images
                   else torch.zeros((0, num_image_tokens), dtype=torch.long))
    return {"input_ids": input_ids, "labels": labels, "attention_mask": (segment_ids >= 0).long(),
            "position_ids": position_ids, "segment_ids": segment_ids, "image_codes": image_codes}


def plan_packing(lengths: np.ndarray, order: np.ndarray, rows: int, max_length: int,
                 lookahead: int) -> list[list[list[int]]]:
    """Group records (visited in ``order``) into micro-batches of ``rows`` rows of <= ``max_length`` tokens.

    Each micro-batch takes records from a window of the next ``lookahead`` ones, each into
    the emptiest row it fits, and is closed when none of them fits any row. Records longer than ``max_length`` take a
    row to themselves (the collator truncates or drops them). Returns micro-batch ->
    row -> record indices; a pure function of its arguments."""
    pending = [int(i) for i in order]
    batches, cursor = [], 0
    window: list[int] = []
    while cursor < len(pending) or window:
        while len(window) < lookahead and cursor < len(pending):
            window.append(pending[cursor])
            cursor += 1
        fill = [0] * rows
        batch: list[list[int]] = [[] for _ in range(rows)]
        placed = True
        while placed and window:
            placed = False
            for w, index in enumerate(window):
                size = min(int(lengths[index]), max_length)
                fits = [r for r in range(rows) if fill[r] + size <= max_length]
                if fits:
                    # The emptiest row: rows fill evenly, so little padding up to the longest row.
                    row = min(fits, key=fill.__getitem__)
                    batch[row].append(index)
                    fill[row] += size
                    del window[w]
                    if cursor < len(pending):
                        window.append(pending[cursor])
                        cursor += 1
                    placed = True
                    break
        batches.append([r for r in batch if r])
    return batches
