"""Shared fixtures: a small Shapes world (with its text tokenizer) made once per session."""
from __future__ import annotations

import os

import pytest

# Tests share 2 cores with nothing else in CI; one intra-op thread per process
# keeps multi-process (DeepSpeed) tests from oversubscribing.
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def shapes_world(tmp_path_factory):
    """Path of a small Shapes world: 64 train, 16 val, 16 test images, seed 0."""
    from unified_ar.train.shapes.world import WorldConfig
    from unified_ar.train.shapes.writer import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(out, {"train": 64, "val": 16, "test": 16}, seed=0, config=WorldConfig())
    return out


@pytest.fixture(scope="session")
def world_tokenizer(shapes_world):
    """The world's text tokenizer, loaded through transformers.AutoTokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shapes_world / "tokenizer")
