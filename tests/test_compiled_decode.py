"""The compiled decode step (unified_ar/compiled_decode.py) samples what the eager transformers step samples."""
from __future__ import annotations

import pytest
import torch

from unified_ar.compiled_decode import count_forwards, use_compiled
from unified_ar.sampling import ImageSamplingConfig, generate_images
from unified_helpers import randomize_, tiny_model

CAPTIONS = ["a red circle at the top left", "a blue square", "two large yellow squares on the right"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = tiny_model(tmp_path_factory.mktemp("tok"), image_position_embedding=True)
    randomize_(m.llm, seed=5, scale=3.0)  # peaked logits: a wrong step changes the codes
    torch.nn.init.normal_(m.image_pos_embed.weight, std=1.0)
    return m


def _sample(model, **settings):
    cfg = ImageSamplingConfig(guidance_scale=2.0, decode_images=False, **settings)
    return generate_images(model, CAPTIONS, seeds=[3, 4, 5], cfg=cfg, keep_logits=True)


@pytest.mark.slow  # compiles the step (~30 s on 2 busy cores)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_compiled_step_equals_eager_step(model, temperature):
    eager = _sample(model, compile=False, temperature=temperature)
    fast = _sample(model, compile=True, temperature=temperature)
    assert torch.equal(fast.codes, eager.codes)
    for a, b in zip(fast.logits, eager.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_static_step_uncompiled_equals_eager_step(model, monkeypatch):
    """The same step without torch.compile (fast to run): catches slot, position and mask errors."""
    import unified_ar.compiled_decode as cd

    monkeypatch.setattr(cd, "compiled_block_forward", lambda llm: cd.block_forward)
    eager = _sample(model, compile=False, temperature=0.0)
    with count_forwards(model) as forwards:
        fast = _sample(model, compile=True, temperature=0.0)
    assert torch.equal(fast.codes, eager.codes)
    for a, b in zip(fast.logits, eager.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert forwards[0] == model.num_image_tokens  # prefill + one forward per fed code
    micro = generate_images(model, CAPTIONS, seeds=[3, 4, 5], cfg=ImageSamplingConfig(
        guidance_scale=2.0, temperature=1.0, top_k=8, compile=True, max_batch=2, decode_images=False))
    whole = generate_images(model, CAPTIONS, seeds=[3, 4, 5], cfg=ImageSamplingConfig(
        guidance_scale=2.0, temperature=1.0, top_k=8, compile=False, decode_images=False))
    assert torch.equal(micro.codes, whole.codes)


def test_when_the_compiled_step_runs(model):
    assert use_compiled(model, ImageSamplingConfig(compile=True))
    assert not use_compiled(model, ImageSamplingConfig())  # CPU: eager by default
    assert not use_compiled(model, ImageSamplingConfig(compile=False))
    with pytest.raises(ValueError, match="cache 'static'"):
        use_compiled(model, ImageSamplingConfig(cache="static", compile=True))
    model.llm.config.model_type, kept = "gpt2", model.llm.config.model_type
    try:
        with pytest.raises(ValueError, match="model_type 'gpt2'"):
            use_compiled(model, ImageSamplingConfig(compile=True))
    finally:
        model.llm.config.model_type = kept
