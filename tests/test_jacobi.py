"""Speculative Jacobi decoding (unified_ar/jacobi.py): greedy codes equal one-code decoding's, sampled
codes follow the same distribution, batches equal their prompts one by one, fewer forwards."""
from __future__ import annotations

import pytest
import torch

import unified_ar.compiled_decode as cd
from unified_ar.compiled_decode import count_forwards
from unified_ar.sampling import ImageSamplingConfig, generate_images
from unified_helpers import randomize_, tiny_model

CAPTIONS = ["a red circle at the top left", "a blue square", "two large yellow squares on the right"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = tiny_model(tmp_path_factory.mktemp("tok"), image_position_embedding=True)
    randomize_(m.llm, seed=5, scale=3.0)  # peaked logits: drafts are often rejected
    torch.nn.init.normal_(m.image_pos_embed.weight, std=1.0)
    return m


@pytest.fixture(autouse=True)
def eager_static_step(monkeypatch):
    """The static step without torch.compile (tests/test_compiled_decode.py compares the two)."""
    monkeypatch.setattr(cd, "compiled_block_forward", lambda llm: cd.block_forward)


def _cfg(**settings):
    return ImageSamplingConfig(**{"guidance_scale": 2.0, "decode_images": False, "compile": True, **settings})


@pytest.mark.parametrize("window", [2, 5, 16])
def test_greedy_jacobi_equals_one_code_greedy(model, window):
    one = generate_images(model, CAPTIONS, 0, _cfg(temperature=0.0, compile=False), keep_logits=True)
    jac = generate_images(model, CAPTIONS, 0, _cfg(temperature=0.0, sampler="jacobi", jacobi_window=window),
                          keep_logits=True)
    assert torch.equal(jac.codes, one.codes)
    for a, b in zip(jac.logits, one.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def _marginals(model, positions, **settings) -> torch.Tensor:
    seeds = list(range(600))
    codes = generate_images(model, ["a blue square"] * len(seeds), seeds, _cfg(**settings)).codes.flatten(1)
    k = model.layout.codebook_size
    return torch.stack([torch.bincount(codes[:, j], minlength=k).float() / len(seeds) for j in positions])


def test_sampled_codes_follow_the_one_code_distribution(model):
    """Per-position marginals of 600 samples (top-k 3, so each has few values): total variation
    against one-code sampling within sampling noise; the always-accept sampler is far off."""
    positions = [1, 2, 5, 9, 15]
    kw = dict(temperature=1.0, top_k=3)
    ref = _marginals(model, positions, compile=False, **kw)
    jac = _marginals(model, positions, sampler="jacobi", jacobi_window=6, **kw)
    tv = 0.5 * (ref - jac).abs().sum(dim=1)
    assert float(tv.max()) < 0.15, tv  # ~0.1 is noise at late positions; accepting every draft: 0.45-0.83


def test_verification_draws_from_the_model_distribution():
    """One position, fixed p and q, 40000 rows: the accepted-or-resampled code is distributed as p
    (sampling from p instead of the residual on rejection, or accepting more, would not be)."""
    from unified_ar.jacobi import _inverse_cdf, verify

    rows = 40000
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.1, 0.1, 0.0]).expand(rows, 1, -1)
    q = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.3]).expand(rows, 1, -1)
    drafts = _inverse_cdf(q, torch.rand(rows, 1, generator=gen))
    m, resampled = verify(p, q, drafts, torch.ones(rows, 1, dtype=torch.bool), torch.rand(rows, 1, generator=gen),
                          torch.rand(rows, generator=gen))
    out = torch.where(m == 1, drafts[:, 0], resampled)
    freq = torch.bincount(out, minlength=5).float() / rows
    torch.testing.assert_close(freq, p[0, 0], atol=0.01, rtol=0)


def test_batch_equals_one_by_one_and_needs_fewer_forwards(model):
    cfg = _cfg(temperature=1.0, top_k=8, sampler="jacobi", jacobi_window=8)
    seeds = [11, 12, 13]
    with count_forwards(model) as forwards:
        batch = generate_images(model, CAPTIONS, seeds, cfg)
    for i, caption in enumerate(CAPTIONS):
        assert torch.equal(generate_images(model, [caption], [seeds[i]], cfg).codes[0], batch.codes[i])
    assert forwards[0] < model.num_image_tokens  # one-code decoding: prefill + 15 forwards
    assert len({tuple(c.flatten().tolist()) for c in batch.codes}) == 3


def test_refusals(model, tmp_path):
    with pytest.raises(ValueError, match="window of >= 2"):
        generate_images(model, CAPTIONS[:1], 0, _cfg(sampler="jacobi", jacobi_window=1))
    with pytest.raises(ValueError, match="not cache 'dynamic'"):
        generate_images(model, CAPTIONS[:1], 0, _cfg(sampler="jacobi", cache="dynamic"))
    from unified_helpers import TINY_VQ

    toklip = {"vq_cfg": TINY_VQ, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2}
    semantic = tiny_model(tmp_path, semantic_gen_input=True, comprehension_features="toklip",
                          **{"toklip.overrides": toklip})
    with pytest.raises(ValueError, match="semantic_gen_input"):
        generate_images(semantic, CAPTIONS[:1], 0, _cfg(sampler="jacobi"))
