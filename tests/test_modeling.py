"""UnifiedARModel: losses, packing mask, placeholders, backends, save/load."""
from __future__ import annotations

import pytest
import torch

from unified_ar.config import ConfigError
from unified_ar.llm import check_attention_backend
from unified_ar.sampling import left_pad, positions
from unified_ar.sequences import comprehension_example, generation_example
from unified_helpers import randomize_, tiny_config, tiny_model

CONV = [{"from": "human", "value": "<image>\nwhat color is the circle?"}, {"from": "gpt", "value": "red"}]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tok"))


def _examples(model):
    n = model.num_image_tokens
    gen = generation_example(model.layout, model.tokenizer, "a red circle", torch.arange(n) % 32, False)
    comp = comprehension_example(model.layout, model.tokenizer, CONV, n)
    return gen, comp


def test_loss_is_weighted_sum_of_text_and_image_parts(tmp_path):
    model = tiny_model(tmp_path, text_loss_weight=0.5, image_loss_weight=2.0)
    gen, comp = _examples(model)
    ids, mask = left_pad([gen.input_ids, comp.input_ids], model.layout.pad_id)
    labels, _ = left_pad([gen.labels, comp.labels], -100)
    codes = torch.randint(0, 32, (1, model.num_image_tokens))
    out = model({"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": positions(mask),
                 "image_codes": codes})
    torch.testing.assert_close(out.loss, 0.5 * out.text_loss + 2.0 * out.image_loss)
    # image loss: 16 image ids + <|image_end|>; text loss: the answer tokens and both eos
    assert out.metrics["image_tokens"] == model.num_image_tokens + 1
    assert out.metrics["text_tokens"] == sum(t != -100 for t in comp.labels[1:]) + 1
    out.loss.backward()
    assert model.projector.net[0].weight.grad is not None
    assert all(p.grad is None for p in model.vq.parameters())  # frozen by default


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_packed_row_equals_samples_alone(tmp_path, backend):
    model = tiny_model(tmp_path, **{"llm.attn_implementation": backend})
    gen, comp = _examples(model)
    codes = torch.randint(0, 32, (1, model.num_image_tokens))
    alone = [model({"input_ids": torch.tensor([e.input_ids]), "image_codes": c}).logits[0]
             for e, c in ((gen, codes[:0]), (comp, codes))]
    row = gen.input_ids + comp.input_ids + [model.layout.pad_id] * 3
    seg = [0] * len(gen.input_ids) + [1] * len(comp.input_ids) + [-1] * 3
    pos = list(range(len(gen.input_ids))) + list(range(len(comp.input_ids))) + [0, 1, 2]
    packed = model({"input_ids": torch.tensor([row]), "segment_ids": torch.tensor([seg]),
                    "position_ids": torch.tensor([pos]), "image_codes": codes}).logits[0]
    torch.testing.assert_close(packed[: len(gen.input_ids)], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[len(gen.input_ids): len(row) - 3], alone[1], atol=1e-5, rtol=1e-4)


def test_placeholder_count_mismatch_is_one_clear_error(model):
    _, comp = _examples(model)
    ids = torch.tensor([comp.input_ids])
    with pytest.raises(ValueError, match="image placeholder mismatch: input_ids hold 1 <\\|image\\|> run"):
        model({"input_ids": ids, "image_codes": torch.zeros(2, model.num_image_tokens, dtype=torch.long)})
    with pytest.raises(ValueError, match="image placeholder mismatch"):
        model({"input_ids": ids})
    short = [t for i, t in enumerate(comp.input_ids) if not (t == model.layout.image_placeholder_id and i % 5 == 0)]
    with pytest.raises(ValueError, match="image placeholder mismatch"):
        model({"input_ids": torch.tensor([short]), "image_codes": torch.zeros(1, 16, dtype=torch.long)})


def test_comprehension_features_replace_placeholders(model):
    _, comp = _examples(model)
    codes = torch.randint(0, 32, (1, model.num_image_tokens))
    embeds = model.embed(torch.tensor([comp.input_ids]), codes)[0]
    slots = torch.tensor(comp.input_ids) == model.layout.image_placeholder_id
    torch.testing.assert_close(embeds[slots], model.comprehension_embeds(codes)[0])


def test_tokens_comprehension_reads_the_llms_own_image_id_embeddings(tmp_path):
    model = tiny_model(tmp_path, comprehension_features="tokens")
    assert model.projector is None
    _, comp = _examples(model)
    codes = torch.randint(0, 32, (1, model.num_image_tokens))
    embeds = model.embed(torch.tensor([comp.input_ids]), codes)[0]
    slots = torch.tensor(comp.input_ids) == model.layout.image_placeholder_id
    ids = model.layout.codes_to_ids(codes[0])
    torch.testing.assert_close(embeds[slots], model.llm.get_input_embeddings()(ids))
    out = model({"input_ids": torch.tensor([comp.input_ids]), "labels": torch.tensor([comp.labels]),
                 "image_codes": codes})
    out.loss.backward()  # the answer's loss reaches the image ids' embedding rows
    assert model.llm.get_input_embeddings().weight.grad[ids].abs().sum() > 0


def test_presets_build_their_architecture_and_take_overrides():
    from unified_ar.llm import LLMConfig, llm_hf_config

    tiny = llm_hf_config(LLMConfig(preset="tiny"), vocab_size=50)  # the demo's LLM: Qwen3 (QK-norm)
    assert (tiny.model_type, tiny.hidden_size, tiny.num_hidden_layers, tiny.head_dim, tiny.vocab_size) == (
        "qwen3", 128, 3, 32, 50)
    deeper = llm_hf_config(LLMConfig(preset="tiny", hf_config={"num_hidden_layers": 6}), vocab_size=50)
    assert (deeper.model_type, deeper.num_hidden_layers) == ("qwen3", 6)
    heads = llm_hf_config(LLMConfig(preset="tiny", hf_config={"num_attention_heads": 8, "num_key_value_heads": 8}))
    assert heads.head_dim == 16  # hidden / heads, as for a Llama
    assert llm_hf_config(LLMConfig(preset="test"), vocab_size=50).model_type == "llama"


def test_unknown_or_missing_attention_backend_is_one_clear_error():
    with pytest.raises(ConfigError, match="unknown attention backend 'flash3'"):
        check_attention_backend("flash3")
    with pytest.raises(ConfigError, match="llm.attn_implementation: expected one of"):
        tiny_config(**{"llm.attn_implementation": "flash3"})
    import importlib.util
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ConfigError, match="flash-attn package, which is not installed"):
            check_attention_backend("flash_attention_2")


def test_save_load_gives_identical_logits(tmp_path):
    model = tiny_model(tmp_path / "tok")
    randomize_(model.projector, seed=3)
    gen, comp = _examples(model)
    codes = torch.randint(0, 32, (1, model.num_image_tokens))
    batch = {"input_ids": torch.tensor([comp.input_ids]), "image_codes": codes}
    before = model(batch).logits
    model.save_pretrained(tmp_path / "ckpt")
    from unified_ar.modeling import UnifiedARModel

    loaded = UnifiedARModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.layout == model.layout
    assert torch.equal(loaded(batch).logits, before)
    gen_batch = {"input_ids": torch.tensor([gen.input_ids])}
    assert torch.equal(loaded(gen_batch).logits, model(gen_batch).logits)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.safetensors")) == [
        "llm.safetensors", "projector.safetensors", "vq.safetensors"]


def test_save_load_keeps_every_parameter_of_every_part(tmp_path):
    """Every tensor of the model comes back, the image position embedding included (it was once
    left out of the saved parts and silently re-initialised on load)."""
    from unified_ar.modeling import UnifiedARModel

    model = tiny_model(tmp_path / "tok", image_position_embedding=True)
    randomize_(model, seed=6)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "image_pos_embed.safetensors").is_file()
    loaded = UnifiedARModel.from_pretrained(tmp_path / "ckpt")
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    (tmp_path / "ckpt" / "image_pos_embed.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing weights of part 'image_pos_embed'"):
        UnifiedARModel.from_pretrained(tmp_path / "ckpt")


def test_toklip_features_save_load_and_shared_vq(tmp_path):
    from unified_ar.modeling import UnifiedARModel
    from unified_helpers import TINY_VQ

    toklip = {"vq_cfg": TINY_VQ, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2}
    model = tiny_model(tmp_path / "tok", comprehension_features="toklip", semantic_gen_input=True,
                       **{"toklip.overrides": toklip})
    assert model.toklip.vq is model.vq  # one VQ, not two copies
    randomize_(model.gen_projector, seed=4)
    gen, comp = _examples(model)
    codes = torch.randint(0, 32, (1, model.num_image_tokens))
    batches = [{"input_ids": torch.tensor([comp.input_ids]), "image_codes": codes},
               {"input_ids": torch.tensor([gen.input_ids])}]
    model.save_pretrained(tmp_path / "ckpt")
    loaded = UnifiedARModel.from_pretrained(tmp_path / "ckpt")
    for batch in batches:
        assert torch.equal(loaded(batch).logits, model(batch).logits)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(tmp_path / str(checkpointing))
        randomize_(model.llm, seed=3)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            # the flag's name before transformers 5.24: is_gradient_checkpointing
            flag = "is_activation_checkpointing" if hasattr(model.llm, "is_activation_checkpointing") \
                else "is_gradient_checkpointing"
            assert getattr(model.llm, flag)
        gen, comp = _examples(model)
        ids, mask = left_pad([gen.input_ids, comp.input_ids], model.layout.pad_id)
        labels, _ = left_pad([gen.labels, comp.labels], -100)
        codes = torch.arange(model.num_image_tokens)[None] % 32
        model({"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": positions(mask),
               "image_codes": codes}).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.llm.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_cache_keyword_follows_the_installed_transformers_spelling():
    """transformers 5.24 renamed the KV-cache argument past_key_values -> cache; run_llm passes either."""
    from unified_ar.llm import cache_keyword

    class New(torch.nn.Module):
        def forward(self, inputs_embeds=None, cache=None, **kwargs):
            return inputs_embeds

    class Old(torch.nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, **kwargs):
            return inputs_embeds

    class Neither(torch.nn.Module):
        def forward(self, inputs_embeds=None, **kwargs):
            return inputs_embeds

    assert cache_keyword(New()) == "cache"
    assert cache_keyword(Old()) == "past_key_values"
    with pytest.raises(TypeError, match="neither `cache` nor `past_key_values`"):
        cache_keyword(Neither())


def test_image_position_embedding_indexes_each_image_run_from_zero(tmp_path):
    model = tiny_model(tmp_path, image_position_embedding=True)
    n = model.num_image_tokens
    mask = torch.tensor([[False, True, True, True, False, True, True]])
    assert model._grid_index(mask).tolist() == [0, 1, 2, 0, 1]
    two_rows = torch.zeros(2, n + 2, dtype=torch.bool)
    two_rows[0, 1:n + 1] = True
    two_rows[1, :2] = True
    assert model._grid_index(two_rows).tolist() == list(range(n)) + [0, 1]
    too_long = torch.ones(1, n + 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="none may exceed"):
        model._grid_index(too_long)
