"""VocabLayout: specials from the tokenizer, code ids after the text vocabulary, resizing."""
from __future__ import annotations

import pytest
import torch

from unified_ar.vocab import IMAGE_PLACEHOLDER, IMAGE_START, PAD_FALLBACK, VocabLayout, resize_llm_vocab
from unified_helpers import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_ids_come_from_the_tokenizer(tokenizer):
    layout = VocabLayout.from_tokenizer(tokenizer, codebook_size=100)
    assert layout.image_start_id == tokenizer.convert_tokens_to_ids(IMAGE_START)
    assert layout.image_placeholder_id == tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    assert (layout.pad_id, layout.eos_id, layout.bos_id) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
    assert layout.code_offset == len(tokenizer)
    assert layout.padded_vocab_size % 64 == 0 and layout.padded_vocab_size >= len(tokenizer) + 100


def test_codes_round_trip_and_range_checks(tokenizer):
    layout = VocabLayout.from_tokenizer(tokenizer, codebook_size=100)
    codes = torch.tensor([[0, 5, 99], [42, 1, 7]])
    ids = layout.codes_to_ids(codes)
    assert bool(layout.is_image_id(ids).all())
    assert torch.equal(layout.ids_to_codes(ids), codes)
    assert not bool(layout.is_image_id(torch.tensor([layout.eos_id, layout.code_offset - 1])).any())
    with pytest.raises(ValueError, match="image codes must lie"):
        layout.codes_to_ids(torch.tensor([100]))
    with pytest.raises(ValueError, match="not image ids"):
        layout.ids_to_codes(torch.tensor([layout.eos_id]))


def test_missing_specials_are_added(tmp_path):
    """A plain sentencepiece tokenizer (no image pieces, no pad) gets them added; pad is never eos."""
    import io
    import json

    import sentencepiece as spm
    from transformers import AutoTokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["a red circle", "a blue square"] * 5), model_writer=buf,
                                   vocab_size=30, model_type="bpe", hard_vocab_limit=False, minloglevel=2,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    (tmp_path / "tokenizer.model").write_bytes(buf.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.pad_token is None and IMAGE_START not in tok.get_vocab()
    before = len(tok)
    layout = VocabLayout.from_tokenizer(tok, codebook_size=8)
    assert len(tok) == before + 4 and tok.pad_token == PAD_FALLBACK
    assert layout.pad_id != layout.eos_id
    assert layout.code_offset == before + 4
    assert tok.convert_ids_to_tokens(layout.image_start_id) == IMAGE_START


def test_resize_initialises_new_rows_at_the_mean(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    layout = VocabLayout.from_tokenizer(tokenizer, codebook_size=100)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=4, tie_word_embeddings=False))
    old_in = llm.get_input_embeddings().weight.detach().clone()
    old_out = llm.get_output_embeddings().weight.detach().clone()
    resize_llm_vocab(llm, layout)
    new_in, new_out = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
    n = old_in.shape[0]
    assert new_in.shape[0] == layout.padded_vocab_size == new_out.shape[0]
    assert torch.equal(new_in[:n], old_in) and torch.equal(new_out[:n], old_out)
    torch.testing.assert_close(new_in[n:], old_in.mean(0, keepdim=True).expand(new_in.shape[0] - n, -1))
    torch.testing.assert_close(new_out[n:], old_out.mean(0, keepdim=True).expand(new_out.shape[0] - n, -1))
