"""UnifiedARProcessor: the one image rule on real image modes and shapes, save/load, the VQ's
identity (codes of another VQ are refused, TokLIP shares the model's VQ), self-contained model
folders, special ids from the tokenizer and the spare embedding rows of an HF checkpoint."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from unified_helpers import TINY_VQ, randomize_, tiny_config, tiny_model, tiny_tokenizer


TINY_TOKLIP = {"vq_cfg": TINY_VQ, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2}


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_image_rule_crops_the_centre_of_a_non_square_image():
    from unified_ar.tokenizer.transforms import image_pixels, to_tensor

    photo = _photo(48, 32)  # short side 32 -> 16: 24 x 16, centre crop keeps columns 4..19
    expected = to_tensor(photo.resize((24, 16), Image.BICUBIC).crop((4, 0, 20, 16)))
    assert torch.equal(image_pixels(photo, 16), expected)
    squashed = to_tensor(photo.resize((16, 16), Image.BICUBIC))
    assert not torch.allclose(image_pixels(photo, 16), squashed)


def test_image_rule_reads_grayscale_cmyk_and_transparent_images(tmp_path):
    from unified_ar.tokenizer.transforms import load_image

    photo = _photo(40, 30)
    photo.convert("L").save(tmp_path / "gray.jpg")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    clear = Image.new("RGBA", (30, 30), (255, 0, 0, 0))  # fully transparent red: white once composited
    clear.save(tmp_path / "clear.png")
    for name in ("gray.jpg", "cmyk.jpg", "clear.png"):
        assert load_image(tmp_path / name, 16).shape == (3, 16, 16)
    gray = load_image(tmp_path / "gray.jpg", 16)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.allclose(load_image(tmp_path / "clear.png", 16), torch.ones(3, 16, 16))


def test_truncated_image_is_one_error_naming_the_file(tmp_path):
    from unified_ar.tokenizer.transforms import load_image

    _photo(64, 48).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.jpg: unreadable image"):
        load_image(tmp_path / "cut.jpg", 16)


def test_processor_round_trip_and_same_pixels_as_the_model_uses(tmp_path):
    from unified_ar.processor import UnifiedARProcessor
    from unified_ar.sampling import image_to_codes

    model = tiny_model(tmp_path / "tok")
    model.processor.save_pretrained(tmp_path / "proc")
    loaded = UnifiedARProcessor.from_pretrained(tmp_path / "proc")
    assert loaded.image == model.processor.image and loaded.image.vq_sha256 == model.vq.weights_sha256()
    assert loaded.layout == model.layout
    photo = _photo(40, 24)
    codes = model.vq.encode(loaded.pixels(photo)[None])[0].flatten()
    assert torch.equal(image_to_codes(model, photo), codes)
    messages = [{"role": "user", "content": "<image>\nwhat color is the circle?"}]
    assert loaded.chat_prompt(messages).count(model.layout.image_placeholder_id) == model.num_image_tokens


def test_training_refuses_codes_of_another_vq(shapes_world, tmp_path):
    from helpers_train import pretokenize_world, save_tiny_vq, stage_config
    from unified_ar.config import ConfigError, from_dict
    from unified_ar.modeling import UnifiedARModel
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel, preset_config
    from unified_ar.train.stage_unified import StageConfig, code_table

    vq_dir = save_tiny_vq(tmp_path / "vq")
    codes = pretokenize_world(shapes_world, vq_dir, tmp_path / "codes")
    config = from_dict(StageConfig, stage_config(shapes_world, vq_dir, codes, tmp_path / "run"))
    assert len(code_table(config, UnifiedARModel.from_config(config.model))) > 0
    torch.manual_seed(1)
    VQModel(preset_config(VQ_PRESETS, "VQ-shapes", **TINY_VQ)).save_pretrained(tmp_path / "other")
    other = from_dict(StageConfig, stage_config(shapes_world, tmp_path / "other", codes, tmp_path / "run"))
    with pytest.raises(ConfigError, match="vq_sha256: data.codes .* re-run `unified-ar pretokenize`"):
        code_table(other, UnifiedARModel.from_config(other.model))


def test_toklip_shares_the_models_vq_and_refuses_another(tmp_path):
    from unified_ar.modeling import UnifiedARModel
    from unified_ar.tokenizer.toklip import TokLIP, toklip_config
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel, preset_config

    torch.manual_seed(0)
    vq = VQModel(preset_config(VQ_PRESETS, "VQ-shapes", **TINY_VQ)).save_pretrained(tmp_path / "vq")
    cfg = toklip_config("TokLIP-shapes", **TINY_TOKLIP)
    TokLIP(cfg, vq=VQModel.from_pretrained(vq)).save_pretrained(tmp_path / "toklip")
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    config = tiny_config(**{"vq.preset": None, "vq.path": str(vq), "vq.overrides": {},
                            "toklip.path": str(tmp_path / "toklip"), "comprehension_features": "toklip"})
    model = UnifiedARModel(config, tokenizer)
    assert model.toklip.vq is model.vq  # one VQ module, not a second copy
    torch.manual_seed(5)
    VQModel(preset_config(VQ_PRESETS, "VQ-shapes", **TINY_VQ)).save_pretrained(tmp_path / "vq2")
    with pytest.raises(ValueError, match="TokLIP's embedded VQ .* is not the model's VQ"):
        UnifiedARModel(tiny_config(**{"vq.preset": None, "vq.path": str(tmp_path / "vq2"), "vq.overrides": {},
                                      "toklip.path": str(tmp_path / "toklip"),
                                      "comprehension_features": "toklip"}), tokenizer)


def test_model_folder_is_self_contained(tmp_path):
    """A model whose VQ and TokLIP came from paths loads from a copy after those paths are gone."""
    from unified_ar.modeling import UnifiedARModel
    from unified_ar.tokenizer.toklip import TokLIP, toklip_config
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel, preset_config

    torch.manual_seed(0)
    vq = VQModel(preset_config(VQ_PRESETS, "VQ-shapes", **TINY_VQ)).save_pretrained(tmp_path / "parts" / "vq")
    TokLIP(toklip_config("TokLIP-shapes", **TINY_TOKLIP),
           vq=VQModel.from_pretrained(vq)).save_pretrained(tmp_path / "parts" / "toklip")
    config = tiny_config(**{"vq.preset": None, "vq.path": str(vq), "vq.overrides": {},
                            "toklip.path": str(tmp_path / "parts" / "toklip"), "comprehension_features": "toklip",
                            "semantic_gen_input": True})
    model = UnifiedARModel(config, tiny_tokenizer(tmp_path / "tok"))
    randomize_(model.projector)
    randomize_(model.gen_projector)
    model.save_pretrained(tmp_path / "export")
    shutil.copytree(tmp_path / "export", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "parts")
    shutil.rmtree(tmp_path / "export")
    loaded = UnifiedARModel.from_pretrained(tmp_path / "elsewhere")
    assert "toklip.visual.trunk.vq" not in " ".join(
        __import__("safetensors.torch", fromlist=["load_file"]).load_file(
            tmp_path / "elsewhere" / "toklip.safetensors"))  # TokLIP's VQ is written once, as vq
    assert loaded.toklip.vq is loaded.vq
    ids = torch.tensor([[model.layout.image_start_id] + [model.layout.code_offset + i for i in range(16)]])
    with torch.no_grad():
        assert torch.equal(model.eval()({"input_ids": ids}).logits, loaded({"input_ids": ids}).logits)


def test_tampered_vq_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from unified_ar.modeling import UnifiedARModel
    from unified_ar.processor import ProcessorMismatch

    tiny_model(tmp_path / "tok").save_pretrained(tmp_path / "m")
    state = load_file(tmp_path / "m" / "vq.safetensors")
    key = next(k for k in state if k.endswith("embedding.weight"))
    state[key] = state[key] + 1.0
    save_file(state, tmp_path / "m" / "vq.safetensors")
    with pytest.raises(ProcessorMismatch, match="vq_sha256"):
        UnifiedARModel.from_pretrained(tmp_path / "m")


def test_no_bos_tokenizer_and_spare_embedding_rows(tmp_path):
    """An HF LLM with more embedding rows than tokens (Qwen2.5's shape) and a tokenizer without BOS."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from unified_ar.modeling import UnifiedARModel
    from unified_ar.sequences import text_example

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    tokenizer.bos_token = None
    base = len(tokenizer)
    spare = 40
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=base + spare, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    with torch.no_grad():
        llm.get_input_embeddings().weight[base:] = 0.0  # untrained spare rows
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    trained = llm.get_input_embeddings().weight[:base].detach().clone()
    config = tiny_config(**{"llm": {"path": str(tmp_path / "llm"), "preset": None, "attn_implementation": "eager"}})
    model = UnifiedARModel(config, tokenizer)
    layout = model.layout
    assert layout.bos_id is None and layout.base_vocab_size == base
    assert layout.code_offset == len(tokenizer) < base + spare  # codes land on the spare rows
    rows = model.llm.get_input_embeddings().weight
    assert rows.shape[0] == layout.padded_vocab_size
    assert torch.equal(rows[:base], trained)
    assert torch.allclose(rows[base:], trained.mean(0, keepdim=True).expand(rows.shape[0] - base, -1))
    example = text_example(layout, tokenizer, "a red circle")
    assert example.input_ids[-1] == layout.eos_id and None not in example.input_ids
    assert example.input_ids[0] != tokenizer.convert_tokens_to_ids("<s>")
