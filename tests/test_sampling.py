"""Sampling exactness: KV cache vs recompute, CFG 1 vs conditional, batch vs one-by-one, limits."""
from __future__ import annotations

import pytest
import torch

from unified_ar.sampling import (
    ImageSamplingConfig, TextSamplingConfig, answer_questions, filter_logits, generate_images, generate_text,
    guidance_at, micro_batch_size, make_generators, prefill, sample_tokens,
)
from unified_ar.sequences import chat_prompt
from unified_helpers import randomize_, tiny_model

CAPTIONS = ["a red circle at the top left", "a blue square", "two large yellow squares on the right"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = tiny_model(tmp_path_factory.mktemp("tok"))
    randomize_(m.llm, seed=5, scale=3.0)  # peaked logits, so sampling is not near-uniform
    return m


@pytest.mark.parametrize("cache", ["preallocated", "static", "dynamic"])
def test_greedy_with_cache_equals_recompute(model, cache):
    kw = dict(guidance_scale=2.0, temperature=0.0, decode_images=False)
    fast = generate_images(model, CAPTIONS, seeds=0, cfg=ImageSamplingConfig(cache=cache, **kw), keep_logits=True)
    slow = generate_images(model, CAPTIONS, seeds=0, cfg=ImageSamplingConfig(cache="none", **kw),
                           keep_logits=True)
    assert torch.equal(fast.codes, slow.codes)
    assert len(fast.logits) == model.num_image_tokens
    for a, b in zip(fast.logits, slow.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    prompts = [chat_prompt(model.layout, model.tokenizer, [{"role": "user", "content": c}], 16) for c in CAPTIONS]
    t_fast = generate_text(model, prompts, cfg=TextSamplingConfig(max_new_tokens=12, cache=cache))
    t_slow = generate_text(model, prompts, cfg=TextSamplingConfig(max_new_tokens=12, cache="none"))
    assert t_fast == t_slow and any(t_fast)


def test_sampled_tokens_follow_the_distribution_and_skip_filtered_ids():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2])
    logits = probs.log().expand(4000, -1)
    picked = sample_tokens(logits, make_generators(range(4000)), temperature=1.0)
    freq = torch.bincount(picked, minlength=5).float() / 4000
    assert freq[0] == 0 and freq[2] == 0
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)
    top1 = sample_tokens(logits[:50], make_generators(range(50)), temperature=1.0, top_k=1)
    assert bool((top1 == 1).all())


def test_preallocated_cache_refuses_to_overflow_and_sliding_layers(model):
    from unified_ar.kv_cache import preallocated_cache

    ids = torch.full((2, 4), model.layout.image_start_id)
    _, state = prefill(model, model.embed(ids), torch.ones(2, 4, dtype=torch.long), "preallocated", 0)
    with pytest.raises(ValueError, match="too small max_new_tokens"):
        model.run_llm(model.embed(ids[:, :1]), torch.ones(2, 5, dtype=torch.long), torch.full((2, 1), 4),
                      cache=state.cache, use_cache=True)
    config = model.llm.config.__class__(**{**model.llm.config.to_dict(), "layer_types": None})
    config.layer_types = ["sliding_attention"] + ["full_attention"] * (config.num_hidden_layers - 1)
    with pytest.raises(ValueError, match="full-attention layers only"):
        preallocated_cache(config, 8)


def test_cfg_scale_one_equals_conditional_sampling(model):
    kw = dict(temperature=1.0, top_k=20, decode_images=False)
    guided = generate_images(model, CAPTIONS, seeds=7, cfg=ImageSamplingConfig(guidance_scale=1.0, **kw),
                             keep_logits=True)
    cond = generate_images(model, CAPTIONS, seeds=7, cfg=ImageSamplingConfig(guidance_scale=None, **kw),
                           keep_logits=True)
    assert torch.equal(guided.codes, cond.codes)
    torch.testing.assert_close(torch.stack(guided.logits), torch.stack(cond.logits), atol=1e-4, rtol=0)
    other = generate_images(model, CAPTIONS, seeds=7, cfg=ImageSamplingConfig(guidance_scale=4.0, **kw))
    assert not torch.equal(other.codes, cond.codes)  # guidance does change the samples


def test_batch_equals_one_by_one_with_the_same_seeds(model):
    cfg = ImageSamplingConfig(guidance_scale=3.0, temperature=1.0, top_k=16, top_p=0.9)
    seeds = [11, 12, 13]
    batch = generate_images(model, CAPTIONS, seeds=seeds, cfg=cfg)
    for i, caption in enumerate(CAPTIONS):
        one = generate_images(model, [caption], seeds=[seeds[i]], cfg=cfg)
        assert torch.equal(one.codes[0], batch.codes[i])
    micro = generate_images(model, CAPTIONS, seeds=seeds, cfg=ImageSamplingConfig(
        guidance_scale=3.0, temperature=1.0, top_k=16, top_p=0.9, max_batch=2))
    assert torch.equal(micro.codes, batch.codes)
    assert batch.codes.shape == (3, *model.grid) and int(batch.codes.max()) < model.layout.codebook_size
    assert batch.images[0].size == (model.config.image_size,) * 2 and batch.seeds == seeds
    assert len({tuple(c.flatten().tolist()) for c in batch.codes}) == 3


def test_memory_limit_sets_the_micro_batch(model):
    # [cond; uncond] x 2 layers x (k, v) x 2 kv heads x head_dim 8 x 40 tokens x 4 bytes = 20480 B a prompt
    assert micro_batch_size(model, 64, 40, ImageSamplingConfig(memory_limit_mb=0.1)) == int(0.1 * 2**20 // 20480)
    assert micro_batch_size(model, 64, 40, ImageSamplingConfig(memory_limit_mb=0.1, max_batch=2)) == 2
    assert micro_batch_size(model, 64, 40, ImageSamplingConfig()) == 64
    with pytest.raises(ValueError, match="below one prompt's KV cache"):
        micro_batch_size(model, 8, 40, ImageSamplingConfig(memory_limit_mb=1e-6))


def test_prompt_longer_than_context_is_one_clear_error(model):
    long_caption = " ".join(["a red circle"] * 400)
    with pytest.raises(ValueError, match="exceeds the model's context of 512"):
        generate_images(model, [long_caption], cfg=ImageSamplingConfig(decode_images=False))
    prompt = chat_prompt(model.layout, model.tokenizer, [{"role": "user", "content": long_caption}], 16)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate_text(model, [prompt])


def test_ask_about_a_generated_image_from_its_codes(model):
    drawn = generate_images(model, CAPTIONS[:2], seeds=1, cfg=ImageSamplingConfig(decode_images=False))
    answers = answer_questions(model, list(drawn.codes), ["what color is the circle?", "how many shapes?"],
                               max_new_tokens=5)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # batched VQA equals one-by-one (left padding does not leak into the answers)
    single = answer_questions(model, [drawn.codes[1]], ["how many shapes?"], max_new_tokens=5)
    assert single[0] == answers[1]


def test_filters_and_schedules():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2, top_p=1.0)).tolist() == [[True, False, False, True]]
    kept = filter_logits(logits, top_k=0, top_p=0.5)
    assert (~torch.isinf(kept)).sum() == 1 and kept[0, 1] == 3.0
    assert guidance_at(3.0, "constant", 0, 10) == 3.0
    assert guidance_at(3.0, "linear", 0, 10) == 1.0 and guidance_at(3.0, "linear", 9, 10) == 3.0
    assert guidance_at(3.0, "cosine", 9, 10) == pytest.approx(3.0)


def _assert_sampling_matches_training_forward(model) -> None:
    """Sample two images (one code a step, KV cache), then run the training forward on the
    sampled sequences: its logits along the image must equal the sampler's step by step."""
    from unified_ar.sampling import left_pad, positions
    from unified_ar.sequences import generation_example

    cfg = ImageSamplingConfig(guidance_scale=None, temperature=1.0, decode_images=False)
    sample = generate_images(model, CAPTIONS[:2], seeds=3, cfg=cfg, keep_logits=True)
    rows = [generation_example(model.layout, model.tokenizer, c, codes.flatten(), False).input_ids
            for c, codes in zip(CAPTIONS[:2], sample.codes)]
    ids, mask = left_pad(rows, model.layout.pad_id)
    logits = model({"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask)}).logits
    start, stop = model.layout.image_id_range()
    n = model.num_image_tokens
    first = ids.shape[1] - n - 2  # left-padded: image ids then <|image_end|> <eos> at the end
    train_logits = logits[:, first - 1: first - 1 + n, start:stop]  # predicting code j from position j-1
    torch.testing.assert_close(torch.stack(sample.logits, 1), train_logits.float(), atol=1e-4, rtol=0)


def test_semantic_gen_input_features_match_training_forward(tmp_path):
    """At sampling time the input at code j's position is embed + gen_projector(TokLIP causal
    feature j), built one code a step from TokLIP's cache; the training forward builds the same
    from all codes at once."""
    from unified_helpers import TINY_VQ

    toklip = {"vq_cfg": TINY_VQ, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2}
    model = tiny_model(tmp_path, semantic_gen_input=True, comprehension_features="toklip",
                       **{"toklip.overrides": toklip})
    randomize_(model.gen_projector, seed=2)  # zero-initialised last layer would make this vacuous
    randomize_(model.llm, seed=5, scale=3.0)
    _assert_sampling_matches_training_forward(model)


def test_image_position_embedding_matches_training_forward(tmp_path):
    """The sampler adds grid index t's embedding to the code it feeds at step t; the training
    forward finds the same indices from the runs of image ids."""
    model = tiny_model(tmp_path, image_position_embedding=True)
    randomize_(model.llm, seed=5, scale=3.0)
    torch.nn.init.normal_(model.image_pos_embed.weight, std=3.0)  # large, so a wrong index shows
    _assert_sampling_matches_training_forward(model)
    # and the embedding matters: without it the forward's image logits change
    plain = tiny_model(tmp_path / "plain")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("image_pos_embed")})
    ids = torch.tensor([[model.layout.image_start_id] + list(range(model.layout.code_offset,
                                                                   model.layout.code_offset + 4))])
    assert not torch.allclose(model({"input_ids": ids}).logits, plain({"input_ids": ids}).logits)
