"""The real-shape fixture (tests/real_shape.py) is what it claims: each artefact loads through the
loader a real run uses (transformers' Auto classes, our official-checkpoint loaders, PIL, the
benchmark loaders, ``load_rows``) and carries the real artefact's peculiarities."""
from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from real_shape import CHAT_TEMPLATE, DEFAULT_SYSTEM, IMAGE_SIZE, QWEN_SPECIALS, build_real_shape

from unified_ar.eval.benchmarks.base import get_benchmark
from unified_ar.tokenizer.transforms import load_image, open_image, to_rgb
from unified_ar.train.data.bad import BadRecord
from unified_ar.train.data.sources import CaptionSource, ConversationSource, ImageCodes, load_rows


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    start = time.perf_counter()
    shape = build_real_shape(tmp_path_factory.mktemp("real_shape"), seed=0)
    print(f"\nbuild_real_shape: {time.perf_counter() - start:.2f} s")
    return shape


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files(real, tmp_path):
    start = time.perf_counter()
    again = build_real_shape(tmp_path / "again", seed=0)
    print(f"\nbuild_real_shape (second build): {time.perf_counter() - start:.2f} s")
    assert _digests(again.root) == _digests(real.root)


# ----------------------------------------------------------------------------- LLM directory
def test_tokenizer_is_qwen_shaped(real):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real.llm_dir, local_files_only=True)
    assert type(tok).__name__ == "Qwen2Tokenizer" and len(tok) == real.text_vocab_size
    assert 300 <= len(tok) <= 1100
    assert tok.bos_token is None and tok.bos_token_id is None
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert set(QWEN_SPECIALS) <= set(tok.all_special_tokens)
    for special in ("<|im_start|>", "<|vision_start|>", "<|image_pad|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    text = "<image>\nWhat color is the circle?\nAnswer: café ✓"  # byte-level: any text round-trips
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and ids == tok(text, add_special_tokens=False)["input_ids"]  # no BOS added
    assert type(tok.backend_tokenizer.decoder).__name__ == "ByteLevel"
    assert tok.chat_template == CHAT_TEMPLATE
    user = [{"role": "user", "content": "What is this?"}]
    assert tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is this?<|im_end|>\n"
        "<|im_start|>assistant\n")
    chat = [{"role": "system", "content": "Be brief."}, *user, {"role": "assistant", "content": "A circle."}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is this?<|im_end|>\n"
        "<|im_start|>assistant\nA circle.<|im_end|>\n")


def test_llm_loads_with_spare_embedding_rows(real):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real.llm_dir, local_files_only=True)
    with safe_open(str(real.llm_dir / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # stored as the release is
        assert not any(k.startswith("lm_head") for k in f.keys())  # tied: saved once
    model = AutoModelForCausalLM.from_pretrained(real.llm_dir, local_files_only=True, dtype=torch.float32).eval()
    cfg = model.config
    assert cfg.model_type == "qwen2" and cfg.tie_word_embeddings and cfg.num_key_value_heads < cfg.num_attention_heads
    hub = json.loads((real.llm_dir / "config.json").read_text())  # the 4.x file of the repository
    assert hub["rope_theta"] == cfg.rope_parameters["rope_theta"] == 1e6 and hub["torch_dtype"] == "bfloat16"
    assert cfg.sliding_window is None and set(cfg.layer_types) == {"full_attention"}  # use_sliding_window false
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == cfg.vocab_size and rows % 64 == 0 and rows - len(tok) > 0
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert cfg.eos_token_id == tok.eos_token_id
    assert model.generation_config.eos_token_id == [tok.eos_token_id, tok.pad_token_id]
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                  tokenize=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], rows)


# ----------------------------------------------------------------------------- VQ and TokLIP
def _vq(real):
    from unified_ar.tokenizer.vq import VQModel

    return VQModel.from_pretrained(real.vq_pt, "VQ-16", **real.vq_overrides)


def test_vq_checkpoint_has_llamagen_layout(real):
    obj = torch.load(real.vq_pt, map_location="cpu", weights_only=True)
    assert list(obj) == ["model"] and "quantize.embedding.weight" in obj["model"]
    vq = _vq(real)  # strict
    assert vq.config.downsample_factor == 16 and vq.config.codebook_size == 256
    pixels = load_image(real.image_root / real.images[0], IMAGE_SIZE)[None]
    codes = vq.encode(pixels)
    assert codes.shape == (1, IMAGE_SIZE // 16, IMAGE_SIZE // 16) and 0 <= int(codes.min()) <= int(codes.max()) < 256
    with torch.no_grad():
        assert vq.decode(codes).shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_toklip_checkpoint_has_official_layout_and_the_same_vq(real):
    from unified_ar.tokenizer.toklip import TokLIP

    state = torch.load(real.toklip_pt, map_location="cpu", weights_only=True)["state_dict"]
    assert all(k.startswith("module.") for k in state)
    assert state["module.logit_scale"].dim() == 0 and state["module.logit_bias"].dim() == 0
    model = TokLIP.from_official_checkpoint(real.toklip_pt, "TokLIP-S-256", tokenizer=real.llm_dir,
                                            **real.toklip_overrides)
    vq_state = _vq(real).state_dict()
    assert set(model.vq.state_dict()) == set(vq_state)
    for key, value in model.vq.state_dict().items():
        assert torch.equal(value, vq_state[key]), key
        assert torch.equal(state[f"module.visual.trunk.vq.{key}"], vq_state[key]), key
    pixels = load_image(real.image_root / real.images[1], IMAGE_SIZE)[None]
    with torch.no_grad():
        tokens, pooled = model.encode_image(pixels)
        text = model.encode_text(model.tokenize(["A red circle on a dark background."]))
    assert tokens.shape == (1, (IMAGE_SIZE // 16) ** 2, 32) and pooled.shape == text.shape == (1, 32)


# ----------------------------------------------------------------------------- images
def test_images_have_the_claimed_modes_sizes_and_names(real):
    modes = {}
    for rel, spec in real.image_specs.items():
        assert re.fullmatch(r"coco/train2017/\d{12}\.(jpg|png)", rel), rel
        with Image.open(real.image_root / rel) as image:
            assert (image.mode, image.size) == (spec.mode, spec.size), rel
            assert image.getexif().get(0x0112, 1) == spec.orientation
            if spec.truncated:
                with pytest.raises(OSError, match="truncated"):
                    image.load()
                continue
            image.load()
            shown = to_rgb(image).size
        assert shown == (spec.size[::-1] if spec.orientation in (5, 6, 7, 8) else spec.size)
        assert load_image(real.image_root / rel, IMAGE_SIZE).shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        modes[spec.mode] = modes.get(spec.mode, 0) + 1
    assert {"L", "RGBA", "CMYK"} <= set(modes) and 12 <= len(real.images) <= 16
    assert any(s.orientation == 6 for s in real.image_specs.values())
    assert len({s.size for s in real.image_specs.values()}) >= 8  # varied, mostly non-square
    with pytest.raises(ValueError, match="unreadable"):
        open_image(real.image_root / real.bad_image)
    assert real.bad_image not in real.images and sum(s.truncated for s in real.image_specs.values()) == 1


# ----------------------------------------------------------------------------- benchmarks
def _loaded(name: str, data_dir: Path) -> list:
    samples = get_benchmark(name).load(data_dir)
    assert 10 <= len(samples) <= 20
    for s in samples:
        assert Path(s.image).is_file(), s.image
        assert to_rgb(s.load_image()).mode == "RGB"  # the stored mode (L, CMYK ...) is the processor's job
    return samples


def test_vqav2_reads_the_official_files(real):
    samples = _loaded("vqav2", real.vqav2_dir)
    assert all(re.fullmatch(r"COCO_val2014_\d{12}\.jpg", Path(s.image).name) for s in samples)
    anns = json.loads((real.vqav2_dir / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    assert all(len(a["answers"]) == 10 for a in anns)
    truth = {str(a["question_id"]): a["multiple_choice_answer"] for a in anns}
    metrics = get_benchmark("vqav2").score(truth, real.vqav2_dir)
    assert metrics["overall"] == pytest.approx(100.0)


def test_pope_reads_the_official_files(real):
    samples = _loaded("pope", real.pope_dir)
    assert {s.category for s in samples} == {"random", "popular", "adversarial"}
    metrics = get_benchmark("pope").score({s.key: s.answer for s in samples}, real.pope_dir)
    assert metrics["mean"]["f1"] == pytest.approx(1.0) and metrics["num_questions"] == len(samples)


def test_mme_reads_the_release_layout(real):
    samples = _loaded("mme", real.mme_dir)
    assert all(s.prompt.endswith("?\nAnswer the question using a single word or phrase.") for s in samples)
    assert (real.mme_dir / "scene" / "questions_answers_YN").is_dir()
    metrics = get_benchmark("mme").score({s.key: s.answer for s in samples}, real.mme_dir)
    categories = {s.category for s in samples}
    assert all(metrics["categories"][c]["score"] == pytest.approx(200.0) for c in categories)


# ----------------------------------------------------------------------------- training data
@pytest.fixture(scope="module")
def codes(real) -> ImageCodes:
    """Codes through the fixture's VQ, each image encoded once (records share images)."""
    vq = _vq(real)

    @functools.lru_cache(maxsize=None)
    def encode(path: Path):
        return vq.encode(load_image(path, IMAGE_SIZE)[None]).numpy()

    return ImageCodes(real.image_root, encoder=encode)


def test_llava_json_loads_and_only_the_bad_record_fails(real, codes):
    rows = load_rows(real.llava_json)
    assert 30 <= len(rows) <= 60
    images = rows["image"]
    text_only = [i for i, image in enumerate(images) if image is None]
    assert len(text_only) >= 5 and all(rows[i]["model"] == "" for i in text_only)
    assert {type(i) for i in rows["id"]} == {str, int}  # mixed, as LLaVA mixtures carry
    assert images.count(real.bad_image) == 1 and images.index(real.bad_image) == real.bad_record_index
    assert any(len(c) >= 6 for c in rows["conversations"])  # three exchanges
    assert any(c[0]["value"].endswith("\n<image>") for c in rows["conversations"])
    source = ConversationSource(real.llava_json, codes)
    for i in range(len(source)):
        if i == real.bad_record_index:
            with pytest.raises(BadRecord, match="unreadable"):
                source[i]
        else:
            sample = source[i]
            assert len(sample.images) == (images[i] is not None)
            assert all(codes.shape == ((IMAGE_SIZE // 16) ** 2,) for codes in sample.images)


def test_caption_parquet_loads(real, codes):
    rows = load_rows(real.captions_parquet)
    assert rows.column_names == ["image", "caption"]
    per_image = {rel: rows["image"].count(rel) for rel in real.images}
    assert set(rows["image"]) == set(real.images) and all(2 <= n <= 4 for n in per_image.values())
    source = CaptionSource(real.captions_parquet, codes)
    assert source[0].caption and source[0].images[0].shape == ((IMAGE_SIZE // 16) ** 2,)
