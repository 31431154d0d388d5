"""TokLIP: official layout loads strictly, causal consistency, incremental cache, training forward."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from test_vq import llamagen_vq_layout

from unified_ar.tokenizer.toklip import TOKLIP_PRESETS, TokLIP, convert_official_state_dict, toklip_config
from unified_ar.tokenizer.vq import load_strict


def toklip_official_layout(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362, img_size=256, patch=16,
                           width=1152, layers=27, text_mlp_ratio=3.7362, vocab=256000, ctx=64,
                           vq=None) -> dict[str, tuple]:
    """Names and shapes of TokLIP's open_clip CustomTextCLIP (timm trunk vit_so400m_patch16_toklip_*,
    global_pool 'map', class_token False, timm_proj 'none'; SigLIP text tower with proj_bias),
    written out from timm VisionTransformer/Block/AttentionPoolLatent and open_clip TextTransformer."""
    d, hid = embed_dim, int(embed_dim * mlp_ratio)
    shapes: dict[str, tuple] = {"logit_scale": (), "logit_bias": ()}
    t = "visual.trunk."
    shapes.update({f"{t}vq.{k}": s for k, s in (vq or llamagen_vq_layout()).items()})
    shapes.update({f"{t}vq_table.weight": (4 * d, 8), f"{t}vq_table.bias": (4 * d,),
                   f"{t}vq_mapping.weight": (d, 4 * d), f"{t}vq_mapping.bias": (d,),
                   f"{t}pos_embed": (1, (img_size // patch) ** 2, d),
                   f"{t}norm.weight": (d,), f"{t}norm.bias": (d,)})
    for i in range(depth):
        b = f"{t}blocks.{i}."
        shapes.update({f"{b}norm1.weight": (d,), f"{b}norm1.bias": (d,), f"{b}norm2.weight": (d,), f"{b}norm2.bias": (d,),
                       f"{b}attn.qkv.weight": (3 * d, d), f"{b}attn.qkv.bias": (3 * d,),
                       f"{b}attn.proj.weight": (d, d), f"{b}attn.proj.bias": (d,),
                       f"{b}mlp.fc1.weight": (hid, d), f"{b}mlp.fc1.bias": (hid,),
                       f"{b}mlp.fc2.weight": (d, hid), f"{b}mlp.fc2.bias": (d,)})
    p = f"{t}attn_pool."
    shapes.update({f"{p}latent": (1, 1, d), f"{p}q.weight": (d, d), f"{p}q.bias": (d,),
                   f"{p}kv.weight": (2 * d, d), f"{p}kv.bias": (2 * d,), f"{p}proj.weight": (d, d), f"{p}proj.bias": (d,),
                   f"{p}norm.weight": (d,), f"{p}norm.bias": (d,), f"{p}mlp.fc1.weight": (hid, d),
                   f"{p}mlp.fc1.bias": (hid,), f"{p}mlp.fc2.weight": (d, hid), f"{p}mlp.fc2.bias": (d,)})
    w, thid = width, int(width * text_mlp_ratio)
    shapes.update({"text.token_embedding.weight": (vocab, w), "text.positional_embedding": (ctx, w),
                   "text.ln_final.weight": (w,), "text.ln_final.bias": (w,),
                   "text.text_projection.weight": (d, w), "text.text_projection.bias": (d,)})
    for i in range(layers):
        r = f"text.transformer.resblocks.{i}."
        shapes.update({f"{r}ln_1.weight": (w,), f"{r}ln_1.bias": (w,), f"{r}ln_2.weight": (w,), f"{r}ln_2.bias": (w,),
                       f"{r}attn.in_proj_weight": (3 * w, w), f"{r}attn.in_proj_bias": (3 * w,),
                       f"{r}attn.out_proj.weight": (w, w), f"{r}attn.out_proj.bias": (w,),
                       f"{r}mlp.c_fc.weight": (thid, w), f"{r}mlp.c_fc.bias": (thid,),
                       f"{r}mlp.c_proj.weight": (w, thid), f"{r}mlp.c_proj.bias": (w,)})
    return shapes


SMALL = dict(embed_dim=32, num_heads=2, depth=2, img_size=32, width=32, heads=2, layers=2, vocab_size=50,
             context_length=8, vq_cfg=dict(ch=32, z_channels=32, codebook_size=64))


def _small_layout():
    return toklip_official_layout(embed_dim=32, depth=2, num_heads=2, img_size=32, width=32, layers=2, vocab=50, ctx=8,
                                  vq=llamagen_vq_layout(ch=32, z=32, codebook=64))


def _model(**overrides) -> TokLIP:
    torch.manual_seed(0)
    return TokLIP(toklip_config("TokLIP-shapes", **overrides)).eval()


@pytest.mark.parametrize("preset,img", [("TokLIP-S-256", 256), ("TokLIP-L-384", 384)])
def test_full_size_official_layout_loads_on_meta(preset, img):
    layout = toklip_official_layout(img_size=img)
    with torch.device("meta"):
        model = TokLIP(TOKLIP_PRESETS[preset])
    assert set(model.state_dict()) == set(layout)
    state = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    load_strict(model, convert_official_state_dict(state), preset)


@pytest.mark.parametrize("wrap", ["plain", "module", "state_dict", "state_dict+module"])
def test_reduced_depth_official_checkpoint_loads(tmp_path, wrap):
    state = {k: torch.randn(s) for k, s in _small_layout().items()}
    if "module" in wrap:
        state = {f"module.{k}": v for k, v in state.items()}
    obj = {"state_dict": state, "epoch": 3} if wrap.startswith("state_dict") else state
    torch.save(obj, tmp_path / "TokLIP_S_256.pt")
    model = TokLIP.from_official_checkpoint(tmp_path / "TokLIP_S_256.pt", "TokLIP-S-256", **SMALL)
    key = "visual.trunk.blocks.1.attn.qkv.weight"
    assert torch.equal(model.state_dict()[key], state[("module." if "module" in wrap else "") + key])
    tokens, pooled = model.encode_image(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert tokens.shape == (2, 4, 32) and pooled.shape == (2, 32)


def test_official_checkpoint_mismatch_lists_keys(tmp_path):
    state = {k: torch.randn(s) for k, s in _small_layout().items()}
    state["visual.trunk.patch_embed.proj.weight"] = torch.zeros(1)
    del state["visual.trunk.attn_pool.latent"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"missing keys \(1\): visual.trunk.attn_pool.latent[\s\S]*"
                                         r"unexpected keys \(1\): visual.trunk.patch_embed.proj.weight"):
        TokLIP.from_official_checkpoint(tmp_path / "bad.pt", "TokLIP-S-256", **SMALL)


def test_overrides_route_to_the_owning_part():
    cfg = toklip_config("TokLIP-L-384", depth=3, layers=4, text_cfg={"mlp_ratio": 2.0})
    assert (cfg.vision_cfg.depth, cfg.text_cfg.layers, cfg.text_cfg.mlp_ratio, cfg.vision_cfg.img_size) == (3, 4, 2.0, 384)
    with pytest.raises(ValueError, match="ambiguous"):
        toklip_config("TokLIP-S-256", mlp_ratio=2.0)
    with pytest.raises(ValueError, match="unknown TokLIP config field 'depht'"):
        toklip_config("TokLIP-S-256", depht=2)


def test_causal_prefix_and_incremental_equal_full_pass():
    model = _model()
    codes = torch.randint(0, 256, (2, 6, 6))
    with torch.no_grad():
        full, pooled = model.encode_codes(codes)
        assert full.shape == (2, 36, 64) and pooled.shape == (2, 64)
        for t in (1, 7, 20):
            prefix = model.encode_codes(codes.flatten(1)[:, :t]).tokens
            torch.testing.assert_close(prefix, full[:, :t], atol=1e-5, rtol=0)
        cache = model.new_cache(2)
        steps = [model.extend(cache, codes.flatten(1)[:, i:i + 1]) for i in range(36)]
        assert cache.length == 36
        assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5
        cache = model.new_cache(2)  # blocks of several codes
        chunks = [model.extend(cache, codes.flatten(1)[:, i:i + 12]) for i in (0, 12, 24)]
        assert (torch.cat(chunks, dim=1) - full).abs().max() < 1e-5
        changed = codes.clone()
        changed[:, -1, -1] = (changed[:, -1, -1] + 1) % 256
        tokens2, pooled2 = model.encode_codes(changed)
    torch.testing.assert_close(tokens2[:, :35], full[:, :35])  # earlier tokens cannot see the last code
    assert not torch.allclose(pooled2, pooled)  # the attention pool sees every token


def test_sdpa_and_eager_toklip_agree():
    model = _model()
    eager = TokLIP(toklip_config("TokLIP-shapes", attn_backend="eager")).eval()
    eager.load_state_dict(model.state_dict())
    codes, ids = torch.randint(0, 256, (2, 36)), torch.randint(0, 192, (2, 40))
    with torch.no_grad():
        for a, b in zip(model.encode_codes(codes), eager.encode_codes(codes)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_text(ids), eager.encode_text(ids), atol=1e-5, rtol=1e-5)


def test_training_forward_trains_towers_not_vq():
    model = _model().train()
    assert not model.vq.training
    codes, ids = torch.randint(0, 256, (4, 36)), torch.randint(0, 192, (4, 40))
    out = model({"codes": codes, "input_ids": ids})
    assert out.image_emb.shape == (4, 64) and math.isfinite(out.loss.item())
    out.loss.backward()
    assert model.visual.trunk.blocks[0].attn.qkv.weight.grad is not None
    assert model.text.text_projection.weight.grad is not None and model.logit_bias.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.vq.parameters())


def test_distillation_needs_teacher_and_adds_loss():
    with pytest.raises(ValueError, match="needs a teacher"):
        _model(distill_weight=1.0)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 64))
    model = TokLIP(toklip_config("TokLIP-shapes", distill_weight=1.0), teacher=teacher).train()
    pixels, ids = torch.rand(2, 3, 96, 96) * 2 - 1, torch.randint(0, 192, (2, 40))
    out = model({"pixels": pixels, "input_ids": ids})
    assert out.metrics["distill_loss"] > 0
    assert out.loss.item() == pytest.approx(out.metrics["siglip_loss"] + out.metrics["distill_loss"], rel=1e-5)
    assert not any(k.startswith("_teacher") for k in model.state_dict())


def test_save_and_from_pretrained_roundtrip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "toklip")
    loaded = TokLIP.from_pretrained(tmp_path / "toklip")
    codes = torch.randint(0, 256, (1, 36))
    with torch.no_grad():
        assert torch.equal(loaded.encode_codes(codes).pooled, model.encode_codes(codes).pooled)
    assert loaded.config == model.config


def test_bad_inputs_raise():
    model = _model()
    with pytest.raises(ValueError, match="exceed the model's 36 positions"):
        model.encode_codes(torch.zeros(1, 37, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids \[B,L<=40\]"):
        model.encode_text(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="no text tokenizer attached"):
        model.tokenize(["a red circle"])


def test_texts_pad_on_the_right_like_siglip(tmp_path):
    # the text tower pools the last position; a tokenizer that pads left by default (transformers 5's
    # sentencepiece LlamaTokenizer does) must not move the caption there
    from unified_helpers import tiny_tokenizer

    tok = tiny_tokenizer(tmp_path)
    tok.padding_side = "left"
    model = _model()
    model.tokenizer = tok
    ids = model.tokenize(["a red circle."])
    unpadded = tok("a red circle.", add_special_tokens=True)["input_ids"]
    assert ids.shape == (1, model.config.text_cfg.context_length)
    assert ids[0, : len(unpadded)].tolist() == unpadded
    assert set(ids[0, len(unpadded):].tolist()) == {tok.pad_token_id}
