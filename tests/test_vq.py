"""VQ tokenizer: official LlamaGen layout loads strictly, shapes, save/load, attention backends."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from unified_ar.tokenizer.attention import attention, check_backend
from unified_ar.tokenizer.losses import codebook_losses, entropy_loss, reconstruction_loss
from unified_ar.tokenizer.vq import VQ_PRESETS, VQConfig, VQModel, load_strict


def _resblock(prefix: str, cin: int, cout: int) -> dict[str, tuple]:
    out = {
        f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
        f"{prefix}.conv1.weight": (cout, cin, 3, 3), f"{prefix}.conv1.bias": (cout,),
        f"{prefix}.norm2.weight": (cout,), f"{prefix}.norm2.bias": (cout,),
        f"{prefix}.conv2.weight": (cout, cout, 3, 3), f"{prefix}.conv2.bias": (cout,),
    }
    if cin != cout:
        out[f"{prefix}.nin_shortcut.weight"] = (cout, cin, 1, 1)
        out[f"{prefix}.nin_shortcut.bias"] = (cout,)
    return out


def _attn(prefix: str, c: int) -> dict[str, tuple]:
    out = {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,)}
    for name in ("q", "k", "v", "proj_out"):
        out[f"{prefix}.{name}.weight"] = (c, c, 1, 1)
        out[f"{prefix}.{name}.bias"] = (c,)
    return out


def llamagen_vq_layout(ch=128, ch_mult=(1, 1, 2, 2, 4), z=256, codebook=16384, dim=8) -> dict[str, tuple]:
    """Names and shapes of LlamaGen's VQModel (vq_model.py, num_res_blocks=2, GroupNorm, show_usage),
    written out from the original Encoder/Decoder/VectorQuantizer definitions."""
    shapes: dict[str, tuple] = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,)}
    in_mult = (1,) + tuple(ch_mult)
    last = len(ch_mult) - 1
    for i, m in enumerate(ch_mult):  # encoder: 2 res blocks per level, attn at the last level
        cin, cout = ch * in_mult[i], ch * m
        for j in range(2):
            shapes.update(_resblock(f"encoder.conv_blocks.{i}.res.{j}", cin if j == 0 else cout, cout))
            if i == last:
                shapes.update(_attn(f"encoder.conv_blocks.{i}.attn.{j}", cout))
        if i != last:
            shapes[f"encoder.conv_blocks.{i}.downsample.conv.weight"] = (cout, cout, 3, 3)
            shapes[f"encoder.conv_blocks.{i}.downsample.conv.bias"] = (cout,)
    top = ch * ch_mult[-1]
    for part in ("encoder", "decoder"):
        shapes.update(_resblock(f"{part}.mid.0", top, top))
        shapes.update(_attn(f"{part}.mid.1", top))
        shapes.update(_resblock(f"{part}.mid.2", top, top))
    shapes.update({"encoder.norm_out.weight": (top,), "encoder.norm_out.bias": (top,),
                   "encoder.conv_out.weight": (z, top, 3, 3), "encoder.conv_out.bias": (z,),
                   "decoder.conv_in.weight": (top, z, 3, 3), "decoder.conv_in.bias": (top,)})
    block_in = top
    for k, i in enumerate(reversed(range(len(ch_mult)))):  # decoder: 3 res blocks per level, from the top
        cout = ch * ch_mult[i]
        for j in range(3):
            shapes.update(_resblock(f"decoder.conv_blocks.{k}.res.{j}", block_in, cout))
            block_in = cout
            if i == last:
                shapes.update(_attn(f"decoder.conv_blocks.{k}.attn.{j}", cout))
        if i != 0:
            shapes[f"decoder.conv_blocks.{k}.upsample.conv.weight"] = (cout, cout, 3, 3)
            shapes[f"decoder.conv_blocks.{k}.upsample.conv.bias"] = (cout,)
    shapes.update({"decoder.norm_out.weight": (ch,), "decoder.norm_out.bias": (ch,),
                   "decoder.conv_out.weight": (3, ch, 3, 3), "decoder.conv_out.bias": (3,),
                   "quantize.embedding.weight": (codebook, dim), "quantize.codebook_used": (65536,),
                   "quant_conv.weight": (dim, z, 1, 1), "quant_conv.bias": (dim,),
                   "post_quant_conv.weight": (z, dim, 1, 1), "post_quant_conv.bias": (z,)})
    return shapes


def _tiny_official_config() -> VQConfig:
    """The LlamaGen layout (5 levels, 2 res blocks) at a width cheap enough to run."""
    return replace(VQ_PRESETS["VQ-16"], ch=32, z_channels=32, codebook_size=64)


def test_vq16_official_layout_loads_strictly_on_meta():
    layout = llamagen_vq_layout()
    state = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    with torch.device("meta"):
        model = VQModel(VQ_PRESETS["VQ-16"])
    assert set(model.state_dict()) == set(layout)
    load_strict(model, state, "vq_ds16_t2i.pt (layout)")


@pytest.mark.parametrize("wrapper", ["ema", "model", "state_dict", None])
def test_official_pt_file_loads_through_from_pretrained(tmp_path, wrapper):
    layout = llamagen_vq_layout(ch=32, z=32, codebook=64)
    state = {k: torch.randn(s) for k, s in layout.items()}
    path = tmp_path / "vq.pt"
    torch.save({wrapper: state, "optimizer": {}} if wrapper else state, path)
    model = VQModel.from_pretrained(path, preset="VQ-16", ch=32, z_channels=32, codebook_size=64)
    assert torch.equal(model.quantize.embedding.weight, state["quantize.embedding.weight"])


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    layout = llamagen_vq_layout(ch=32, z=32, codebook=64)
    state = {k: torch.randn(s) for k, s in layout.items()}
    state["quantize.embedding.weights"] = state.pop("quantize.embedding.weight")
    state["quant_conv.bias"] = torch.zeros(9)
    torch.save({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        VQModel.from_pretrained(tmp_path / "bad.pt", preset="VQ-16", ch=32, z_channels=32, codebook_size=64)
    msg = str(err.value)
    assert "missing keys (1): quantize.embedding.weight" in msg
    assert "unexpected keys (1): quantize.embedding.weights" in msg
    assert "quant_conv.bias: checkpoint (9,) vs model (8,)" in msg
    assert "bad.pt" in msg


def test_official_file_needs_preset(tmp_path):
    torch.save({"model": {}}, tmp_path / "vq.pt")
    with pytest.raises(ValueError, match="preset="):
        VQModel.from_pretrained(tmp_path / "vq.pt")


def test_encode_decode_shapes_and_code_embeddings():
    torch.manual_seed(0)
    model = VQModel(_tiny_official_config()).eval()
    pixels = torch.rand(2, 3, 32, 64) * 2 - 1
    codes = model.encode(pixels)
    assert codes.shape == (2, 2, 4) and codes.dtype == torch.long
    assert model.grid_size(96) == 6
    emb = model.code_embeddings(codes)
    assert emb.shape == (2, 8, 2, 4)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2, 2, 4))  # l2-normalised codebook
    assert model.decode(codes).shape == (2, 3, 32, 64)
    out = model(pixels)
    assert torch.equal(out.codes, codes) and out.recon.shape == pixels.shape and out.loss is None


def test_bad_input_sizes_raise():
    model = VQModel(_tiny_official_config())
    with pytest.raises(ValueError, match="multiple of the VQ downsampling factor 16"):
        model.encode(torch.zeros(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        model.encode(torch.zeros(3, 32, 32))


def test_training_forward_losses_and_usage():
    torch.manual_seed(0)
    cfg = replace(VQ_PRESETS["VQ-shapes"], entropy_loss_ratio=0.1, codebook_restart_every=1)
    model = VQModel(cfg).train()
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    out = model({"pixels": pixels, "global_step": 0})  # the preset's foreground weight decays with the step
    for key in ("recon_loss", "codebook_loss", "commit_loss", "entropy_loss", "codebook_usage", "psnr"):
        assert key in out.metrics
    out.loss.backward()
    assert model.encoder.conv_in.weight.grad is not None and model.quantize.embedding.weight.grad is not None
    before = model.quantize.embedding.weight.detach().clone()
    out2 = model({"pixels": pixels, "global_step": 1})  # restart check is due: unused codes move onto encoder outputs
    assert out2.metrics["codes_restarted"] > 0
    assert not torch.equal(before, model.quantize.embedding.weight)


def test_foreground_mask_and_decaying_weight():
    from unified_ar.tokenizer.vq import foreground_mask

    pixels = -torch.ones(2, 3, 32, 32)
    pixels[0, 0, 4:10, 4:10] = 1.0  # a red square on black
    pixels[1] = 0.5  # a flat grey image has no foreground
    mask = foreground_mask(pixels)
    assert mask.shape == (2, 1, 32, 32) and mask[0].sum() == 36 and mask[0, 0, 4:10, 4:10].all()
    assert mask[1].sum() == 0

    torch.manual_seed(0)
    model = VQModel(replace(VQ_PRESETS["VQ-shapes"], foreground_loss_weight=10.0, foreground_loss_steps=100))
    assert model.takes_global_step
    assert [model.foreground_weight(s) for s in (0, 50, 100, 150)] == [10.0, 5.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="global_step"):
        model.train()({"pixels": pixels})
    weighted = model({"pixels": pixels, "global_step": 0})
    plain = model({"pixels": pixels, "global_step": 100})
    assert weighted.metrics["foreground_weight"] == 10.0 and "foreground_weight" not in plain.metrics
    assert weighted.metrics["recon_loss"] > plain.metrics["recon_loss"]
    with pytest.raises(ValueError, match="foreground"):
        VQConfig(foreground_loss_weight=-1.0)


def test_save_and_from_pretrained_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = VQModel(VQ_PRESETS["VQ-shapes"]).eval()
    model.save_pretrained(tmp_path / "vq")
    loaded = VQModel.from_pretrained(tmp_path / "vq")
    assert loaded.config == model.config
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(pixels), model.encode(pixels))
    with pytest.raises(ValueError, match="drop preset="):
        VQModel.from_pretrained(tmp_path / "vq", preset="VQ-16")


def test_sdpa_and_eager_attention_agree():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    for causal in (False, True):
        torch.testing.assert_close(attention(q, k, v, causal, "sdpa"), attention(q, k, v, causal, "eager"))
    # queries at the end of a longer key sequence (KV cache): bottom-right causal alignment
    torch.testing.assert_close(attention(q[:, :, -2:], k, v, True, "sdpa"), attention(q, k, v, True, "eager")[:, :, -2:])
    model = VQModel(_tiny_official_config()).eval()
    eager = VQModel(replace(model.config, attn_backend="eager")).eval()
    eager.load_state_dict(model.state_dict())
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).recon, eager(pixels).recon, atol=1e-5, rtol=1e-4)


def test_unknown_or_missing_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown attention backend"):
        check_backend("flash")
    try:
        import xformers  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="xformers package is not installed"):
            VQModel(replace(_tiny_official_config(), attn_backend="xformers"))
    else:
        pytest.skip("xformers is installed here; the not-installed error cannot be shown")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers attention needs a CUDA GPU")
def test_xformers_matches_sdpa_on_gpu():
    pytest.importorskip("xformers", reason="xformers is not installed")
    q, k, v = (torch.randn(2, 3, 7, 16, device="cuda", dtype=torch.float16) for _ in range(3))
    for causal in (False, True):
        torch.testing.assert_close(attention(q, k, v, causal, "xformers"), attention(q, k, v, causal, "sdpa"),
                                   atol=2e-3, rtol=2e-3)


def test_patch_local_encoder_codes_depend_on_their_patch_only():
    torch.manual_seed(0)
    cfg = replace(_tiny_official_config(), encoder_patch_local=True)
    model = VQModel(cfg).eval()
    pixels = torch.rand(2, 3, 32, 48) * 2 - 1
    pixels[1, :, :16, :16] = pixels[0, :, :16, :16]  # one patch repeated across images (encoded once)
    with torch.no_grad():
        features = model._encode(pixels)
        for i, j in ((0, 0), (1, 2)):  # equals running the encoder on the patch alone
            alone = model.encoder(pixels[:, :, 16 * i:16 * i + 16, 16 * j:16 * j + 16])
            torch.testing.assert_close(features[:, :, i, j], alone[:, :, 0, 0], rtol=1e-5, atol=1e-5)
    changed = pixels.clone()
    changed[:, :, 16:, :] = -1.0  # blank the bottom row of patches
    assert torch.equal(model.encode(changed)[:, 0], model.encode(pixels)[:, 0])
    whole = VQModel(replace(cfg, encoder_patch_local=False)).eval()
    whole.load_state_dict(model.state_dict())  # same parameters, same key names
    assert not torch.equal(whole._encode(pixels), model._encode(pixels))


def test_patch_local_gradients_match_encoding_every_patch():
    torch.manual_seed(0)
    model = VQModel(replace(_tiny_official_config(), encoder_patch_local=True))
    pixels = -torch.ones(2, 3, 32, 32)
    pixels[0, :, :16, :16] = 0.5  # three blank patches per image repeat
    model._encode(pixels).pow(2).sum().backward()
    deduplicated = model.encoder.conv_in.weight.grad.clone()
    model.zero_grad()
    patches = pixels.unfold(2, 16, 16).unfold(3, 16, 16).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 16, 16)
    model.encoder(patches).pow(2).sum().backward()
    full = model.encoder.conv_in.weight.grad
    torch.testing.assert_close(deduplicated, full, rtol=1e-3, atol=1e-4 * full.abs().max().item())  # summation order


def test_patch_local_decoder_draws_each_code_alone():
    torch.manual_seed(0)
    cfg = replace(_tiny_official_config(), decoder_patch_local=True)
    model = VQModel(cfg).eval()
    codes = torch.randint(0, cfg.codebook_size, (2, 2, 3))
    changed = codes.clone()
    changed[:, 1] = (codes[:, 1] + 1) % cfg.codebook_size  # new codes in the bottom row
    with torch.no_grad():
        pixels, other = model.decode(codes), model.decode(changed)
        # equal to decoding every position (no deduplication) and to decoding the code alone
        torch.testing.assert_close(pixels, model.decode_latent(model.code_embeddings(codes)))
        alone = model.decoder(model.post_quant_conv(model.code_embeddings(codes[:1, :1, 2:3])))
    assert pixels.shape == (2, 3, 32, 48)
    torch.testing.assert_close(pixels[:1, :, :16, 32:48], alone, rtol=1e-5, atol=1e-5)
    assert torch.equal(pixels[:, :, :16], other[:, :, :16])
    whole = VQModel(replace(cfg, decoder_patch_local=False)).eval()
    whole.load_state_dict(model.state_dict())  # same parameters, same key names
    assert not torch.allclose(whole.decode(codes), pixels)


def test_all_patch_local_training_step_equals_the_per_position_one():
    """Encoder, quantizer and decoder run once per distinct patch; losses and gradients equal the
    per-position computation (the repeats' gradients are summed by the gathers)."""
    torch.manual_seed(0)
    cfg = replace(_tiny_official_config(), encoder_patch_local=True, decoder_patch_local=True, norm_groups=1,
                  entropy_loss_ratio=0.1)
    model = VQModel(cfg).train()
    pixels = -torch.ones(3, 3, 32, 48)
    pixels[:, :, :16, 16:32] = torch.rand(3, 16, 16) * 2 - 1  # one patch repeated in every image
    pixels[0, :, 16:, :16] = 0.3
    out = model(pixels)
    out.loss.backward()
    deduplicated = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    z, z_q, codes, dist, _ = model._latent(pixels)  # per position: every patch through the decoder
    recon = model.decode_latent((z + (z_q - z).detach()).permute(0, 3, 1, 2))
    loss = (reconstruction_loss(recon, pixels, "l2") + sum(codebook_losses(z, z_q, cfg.commit_loss_beta))
            + cfg.entropy_loss_ratio * entropy_loss(-dist))
    torch.testing.assert_close(out.recon, recon)
    torch.testing.assert_close(out.codes, codes)
    torch.testing.assert_close(out.loss, loss)
    loss.backward()
    # rounding only (summation order), measured against the largest gradient: attention over one
    # position has query/key gradients that are zero up to rounding
    scale = max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)
    for name, p in model.named_parameters():
        if name in deduplicated:
            torch.testing.assert_close(deduplicated[name], p.grad, rtol=1e-3, atol=1e-5 * scale)


def test_code_search_runs_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = VQModel(_tiny_official_config())
    z = torch.randn(2, model.config.codebook_embed_dim, 3, 3)
    _, _, codes, dist = model.quantize(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, codes_autocast, dist_autocast = model.quantize(z)
    assert dist_autocast.dtype == torch.float32
    torch.testing.assert_close(dist_autocast, dist)
    assert torch.equal(codes_autocast, codes)


@pytest.mark.parametrize("patch_local", [False, True])
def test_bf16_weights_take_fp32_pixels(patch_local):
    """DeepSpeed bf16 casts the weights, not the batch: training and decoding still run."""
    torch.manual_seed(0)
    cfg = replace(_tiny_official_config(), encoder_patch_local=patch_local, decoder_patch_local=patch_local,
                  norm_groups=1 if patch_local else 32)
    model = VQModel(cfg).to(torch.bfloat16).train()
    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    out.loss.backward()
    assert out.recon.dtype == torch.bfloat16 and model.encoder.conv_in.weight.grad is not None
    assert model.eval().decode(out.codes).shape == (2, 3, 32, 32)


def test_attention_inputs_have_row_major_strides_on_a_one_patch_grid(monkeypatch):
    """CUDA's fused SDPA kernels check the strides of size-1 dims, which contiguous() leaves as is."""
    import unified_ar.tokenizer.vq as vq_module

    seen = []

    def recording_attention(q, k, v, causal=False, backend="sdpa"):
        seen.extend(t.stride() for t in (q, k, v))
        return attention(q, k, v, causal, backend)

    monkeypatch.setattr(vq_module, "attention", recording_attention)
    block = vq_module.AttnBlock(8, "sdpa", 1)
    x = torch.randn(3, 8, 1, 1)
    torch.testing.assert_close(block(x), x + block.proj_out(block.v(block.norm(x))))  # one key: out = v
    assert seen == [(8, 8, 8, 1)] * 3
