"""Collation and packing: the contract's batch dict, caption dropout, truncation, packing plans,
and a packed batch giving each sample the loss it gets alone (tiny unified model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from unified_ar.sequences import IGNORE
from unified_ar.train.collate import CollateConfig, Collator, plan_packing
from unified_ar.train.data.sources import Sample
from unified_helpers import randomize_, tiny_model

CONV = [{"from": "human", "value": "<image>\nwhat color is the circle?"}, {"from": "gpt", "value": "red"}]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    model = tiny_model(tmp_path_factory.mktemp("tok"))
    randomize_(model.projector)  # a zero-initialised projector would hide image-feature mix-ups
    return model


def _samples(n: int, num_tokens: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        codes = rng.integers(0, 32, num_tokens)
        if i % 3 == 0:
            out.append(Sample("comprehension", f"conv:{i}", conversation=CONV, images=[codes], num_images=1))
        elif i % 3 == 1:
            out.append(Sample("generation", f"cap:{i}", caption="a blue square in the center" if i % 2 else
                              "a red circle", images=[codes], num_images=1))
        else:
            out.append(Sample("text", f"text:{i}", text="is there a square? yes"))
    return out


def _collator(model, **changes) -> Collator:
    config = CollateConfig(**{"caption_dropout": 0.0, **changes})
    return Collator(model.layout, model.tokenizer, model.num_image_tokens, config, seed=0)


def test_packed_batch_follows_the_contract(model):
    collator = _collator(model, max_length=128)
    samples = _samples(6, model.num_image_tokens)
    lengths = [collator.length(s) for s in samples]
    batch = collator.pack([samples[:3], samples[3:5], samples[5:]], key=0)
    assert set(batch) == {"input_ids", "labels", "attention_mask", "position_ids", "segment_ids", "image_codes"}
    assert batch["input_ids"].shape == (3, max(sum(lengths[:3]), sum(lengths[3:5]), lengths[5]))
    row0_positions = batch["position_ids"][0, : sum(lengths[:3])]
    assert row0_positions.tolist() == [p for n in lengths[:3] for p in range(n)]
    assert batch["segment_ids"][0, : sum(lengths[:3])].tolist() == [s for s, n in enumerate(lengths[:3]) for _ in range(n)]
    assert (batch["segment_ids"][2, lengths[5]:] == -1).all() and (batch["attention_mask"][2, lengths[5]:] == 0).all()
    assert (batch["labels"][batch["segment_ids"] < 0] == IGNORE).all()
    # comprehension images in order of appearance: samples 0 and 3
    torch.testing.assert_close(batch["image_codes"], torch.tensor(np.stack([samples[0].images[0], samples[3].images[0]])))


def test_caption_dropout_is_seeded_and_near_its_rate(model):
    collator = _collator(model, caption_dropout=0.1)
    drops = np.concatenate([collator.drops(key, 50) for key in range(40)])
    assert 0.07 < drops.mean() < 0.13
    assert (collator.drops(5, 50) == collator.drops(5, 50)).all()
    sample = _samples(2, model.num_image_tokens)[1]
    kept, dropped = collator.example(sample, False).example, collator.example(sample, True).example
    assert len(dropped.input_ids) < len(kept.input_ids)
    assert dropped.labels[-(model.num_image_tokens + 2):] == kept.labels[-(model.num_image_tokens + 2):]


def test_truncation_is_counted_and_never_cuts_an_image(model):
    collator = _collator(model, max_length=12)
    text = Sample("text", "t", text="two large yellow squares on the right " * 3)
    image = _samples(2, model.num_image_tokens)[1]
    batch = collator([text, image, text], key=0)
    assert batch["input_ids"].shape == (2, 12)
    assert collator.counters == {"truncated": 2, "too_long": 1}


def test_conversation_cache_gives_the_uncached_layout_and_stays_bounded(model, monkeypatch):
    import unified_ar.train.collate as collate_module

    rendered = []
    real = collate_module.comprehension_example
    monkeypatch.setattr(collate_module, "comprehension_example",
                        lambda *args: rendered.append(args[2]) or real(*args))
    convs = [[{"from": "human", "value": f"<image>\nwhat color is the {s}?"}, {"from": "gpt", "value": c}]
             for s, c in (("circle", "red"), ("square", "blue"), ("triangle", "green"))]
    codes = np.zeros(model.num_image_tokens, dtype=np.int64)
    samples = [Sample("comprehension", f"conv:{i}", conversation=c, images=[codes], num_images=1)
               for i, c in enumerate(convs)]
    cached, uncached = _collator(model, conversation_cache=2), _collator(model, conversation_cache=0)
    for sample in samples + samples[1:] + samples[:1]:  # 0 1 2 1 2 0: the third evicts the first
        assert cached.example(sample).example == uncached.example(sample).example
    assert len(rendered) == 6 + 4  # uncached: every call; cached: 0, 1, 2, then 0 again
    assert len(cached._conversations) == 2
    with pytest.raises(ValueError, match="conversation_cache must be >= 0"):
        CollateConfig(conversation_cache=-1)


def test_plan_packing_places_every_record_once_within_limits():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 90, 500)
    order = rng.permutation(500)
    plan = plan_packing(lengths, order, rows=4, max_length=256, lookahead=32)
    assert sorted(i for batch in plan for row in batch for i in row) == list(range(500))
    assert all(len(batch) <= 4 and sum(lengths[row]) <= 256 for batch in plan for row in batch)
    assert plan == plan_packing(lengths, order, rows=4, max_length=256, lookahead=32)
    real = lengths.sum()
    slots = sum(len(batch) * max(sum(lengths[row]) for row in batch) for batch in plan)
    assert real / slots > 0.95


def _loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of one sample: logits [n,V], labels [n]."""
    return F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_packed_batch_gives_each_sample_its_own_loss(tmp_path, backend):
    model = tiny_model(tmp_path, **{"llm.attn_implementation": backend})
    randomize_(model.projector)
    collator = _collator(model, max_length=256)
    samples = _samples(5, model.num_image_tokens, seed=3)
    packed = collator.pack([samples[:3], samples[3:]], key=0)
    with torch.no_grad():
        logits = model(packed).logits
        for r, row in enumerate([samples[:3], samples[3:]]):
            for s, sample in enumerate(row):
                alone = collator([sample], key=0)
                expected = _loss_of(model(alone).logits[0], alone["labels"][0])
                where = packed["segment_ids"][r] == s
                got = _loss_of(logits[r][where], packed["labels"][r][where])
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
