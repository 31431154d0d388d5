"""Sequence layouts: generation, comprehension (multi-turn), prompt builders, chat templates."""
from __future__ import annotations

import pytest
import torch

from unified_ar.sequences import (
    DEFAULT_CHAT_TEMPLATE, IGNORE, chat_prompt, comprehension_example, generation_example, generation_prompt,
)
from unified_ar.vocab import VocabLayout
from unified_helpers import tiny_tokenizer

N = 4


@pytest.fixture(scope="module")
def tok_layout(tmp_path_factory):
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    return tok, VocabLayout.from_tokenizer(tok, codebook_size=16)


def test_generation_layout_and_labels(tok_layout):
    tok, layout = tok_layout
    codes = torch.tensor([3, 0, 15, 7])
    ex = generation_example(layout, tok, "a red circle", codes, drop_caption=False)
    prompt = generation_prompt(layout, tok, "a red circle")
    assert ex.input_ids == prompt + [layout.image_start_id] + (codes + layout.code_offset).tolist() + [
        layout.image_end_id, layout.eos_id]
    assert ex.labels == [IGNORE] * (len(prompt) + 1) + ex.input_ids[len(prompt) + 1:]
    assert ex.num_images == 0
    # the prompt is the chat-templated caption, ending with the assistant marker
    assert tok.decode(prompt) == tok.apply_chat_template(
        [{"role": "user", "content": "a red circle"}], add_generation_prompt=True, tokenize=False)


def test_dropped_caption_is_the_templated_empty_prompt(tok_layout):
    tok, layout = tok_layout
    ex = generation_example(layout, tok, "a red circle", torch.zeros(N, dtype=torch.long), drop_caption=True)
    uncond = generation_prompt(layout, tok, None)
    assert ex.input_ids[: len(uncond)] == uncond
    assert ex.input_ids[len(uncond)] == layout.image_start_id
    text = tok.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True, tokenize=False)
    assert tok.decode(uncond) == text
    assert "red" not in tok.decode(ex.input_ids)


def test_comprehension_multi_turn_masks_all_but_assistant(tok_layout):
    tok, layout = tok_layout
    conv = [
        {"from": "human", "value": "<image>\nwhat color is the circle?"},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "is there a square?"},
        {"from": "gpt", "value": "no"},
    ]
    ex = comprehension_example(layout, tok, conv, num_image_tokens=N)
    ids, labels = ex.input_ids, ex.labels
    assert ex.num_images == 1 and len(ids) == len(labels)
    s = ids.index(layout.image_start_id)
    assert ids[s:s + N + 2] == [layout.image_start_id] + [layout.image_placeholder_id] * N + [layout.image_end_id]
    learned = [t for t, lab in zip(ids, labels) if lab != IGNORE]
    assert [t for t, lab in zip(ids, labels) if lab != IGNORE] == [lab for lab in labels if lab != IGNORE]
    assert tok.decode(learned, skip_special_tokens=True).split() == ["red", "no"]
    assert learned.count(layout.eos_id) == 2 and labels[-1] == layout.eos_id
    # the ids up to the first answer are exactly the sampling prompt for that question
    prompt = chat_prompt(layout, tok, conv[:1], num_image_tokens=N)
    assert ids[: len(prompt)] == prompt and all(lab == IGNORE for lab in labels[: len(prompt)])


def test_default_template_for_tokenizers_without_one(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    tok.chat_template = None
    layout = VocabLayout.from_tokenizer(tok, codebook_size=16)
    conv = [{"role": "user", "content": "<image> what color?"}, {"role": "assistant", "content": "red"}]
    ex = comprehension_example(layout, tok, conv, num_image_tokens=N)
    learned = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE]
    assert tok.decode(learned, skip_special_tokens=True).strip() == "red"
    # the answer ends in eos; after it only the template's "\n" separator (one space piece here)
    end = learned.index(layout.eos_id)
    assert tok.decode(learned[end + 1:]).strip() == ""
    assert tok.chat_template is None  # the default is passed per call, never written into the tokenizer
    expected = tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template=DEFAULT_CHAT_TEMPLATE,
                                       add_generation_prompt=True, tokenize=False)
    assert expected.endswith("Assistant:")


def test_bad_conversations_raise(tok_layout):
    tok, layout = tok_layout
    with pytest.raises(ValueError, match="unknown role"):
        comprehension_example(layout, tok, [{"from": "robot", "value": "hi"}], N)
    with pytest.raises(ValueError, match="no assistant turn"):
        comprehension_example(layout, tok, [{"from": "human", "value": "<image> hi"}], N)
    with pytest.raises(ValueError, match="assistant turn"):
        comprehension_example(layout, tok, [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "<image>"}], N)
