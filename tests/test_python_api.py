"""The Python API (README "## Python API"): draw, answer, chat and stream_chat on a tiny saved model."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from unified_ar import UnifiedARModel
from unified_ar.sampling import TextSamplingConfig, answer_questions, generate_images, text_pieces
from unified_helpers import randomize_, tiny_model

README = Path(__file__).resolve().parents[1] / "README.md"
QUESTION = [{"role": "user", "content": "<image>\nhow many shapes are there?"}]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api")
    model = tiny_model(root / "tok")
    randomize_(model.llm, scale=3.0)  # varied replies of many tokens, not one repeated token or an eos
    model.generation_config.text.max_new_tokens = 16  # the folder's reply length (the default is 64)
    return model.save_pretrained(root / "my_model")


@pytest.fixture(scope="module")
def model(saved) -> UnifiedARModel:
    return UnifiedARModel.from_pretrained(saved)


def readme_snippet() -> str:
    """The python block of the README's "## Python API" section."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section holds one python code block"
    return blocks[0]


def test_readme_snippet_runs_as_written(saved, model, tmp_path, monkeypatch, capsys):
    code = readme_snippet()
    assert code.count('"my_model"') == 1  # the one thing the test changes: where the model is
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code.replace('"my_model"', repr(str(saved))), "README.md", "exec"), scope)
    image = scope["image"]
    assert isinstance(image, Image.Image) and Image.open(tmp_path / "circle.png").size == image.size
    answer = model.answer(image, "what color is the circle?")
    reply = model.chat(QUESTION, [image])
    assert answer and reply and capsys.readouterr().out == f"{answer}\n{reply}"


def test_draw_is_seeded_and_takes_the_models_defaults(model):
    first = model.draw("a red circle", seed=3)
    assert isinstance(first, Image.Image) and first.size == (16, 16)
    assert first.tobytes() == model.draw("a red circle", seed=3).tobytes()
    assert first.tobytes() != model.draw("a red circle", seed=4).tobytes()
    both = model.draw(["a red circle", "a blue square"], seed=3)  # caption i gets seed 3 + i
    assert [im.tobytes() for im in both] == [first.tobytes(), model.draw("a blue square", seed=4).tobytes()]
    scale = model.generation_config.image.guidance_scale
    try:
        model.generation_config.image.guidance_scale = 1.5
        assert model.draw("a red circle", seed=3).tobytes() == model.draw("a red circle", seed=3,
                                                                          guidance_scale=1.5).tobytes()
    finally:
        model.generation_config.image.guidance_scale = scale
    assert first.tobytes() != model.draw("a red circle", seed=3, guidance_scale=1.5).tobytes()
    assert model.draw("a red circle", guidance_scale=None).size == (16, 16)  # no CFG


def test_answer_takes_pil_a_path_or_codes(model, tmp_path):
    sample = generate_images(model, ["a red circle"], seeds=[1])
    image, codes = sample.images[0], sample.codes[0]
    image.save(tmp_path / "drawn.png")
    question = "what color is the circle?"
    answer = model.answer(image, question)
    assert isinstance(answer, str) and answer
    assert model.answer(tmp_path / "drawn.png", question) == answer
    greedy = TextSamplingConfig(max_new_tokens=model.generation_config.text.answer_max_new_tokens)
    assert model.answer(codes, question) == answer_questions(model, [codes], [question], cfg=greedy)[0]
    assert model.answer([image, codes], [question, "is there a square?"]) == [
        answer, model.answer(codes, "is there a square?")]
    with pytest.raises(ValueError, match="list of images"):
        model.answer(image, [question])


@pytest.mark.parametrize("settings", [{}, {"temperature": 1.0, "top_k": 20}], ids=["greedy", "sampled"])
def test_stream_chat_joins_to_the_chat_reply(model, settings):
    image = model.draw("a red circle", seed=2)
    reply = model.chat(QUESTION, [image], seed=5, **settings)
    pieces = list(model.stream_chat(QUESTION, [image], seed=5, **settings))
    assert len(pieces) > 3 and all(pieces) and "".join(pieces) == reply
    if settings:  # the seed decides a sampled reply
        assert model.chat(QUESTION, [image], seed=5, **settings) == reply
        assert model.chat(QUESTION, [image], seed=6, **settings) != reply


def test_chat_counts_images_against_markers(model):
    with pytest.raises(ValueError, match=r"1 <image> marker\(s\) for 0 image"):
        model.chat(QUESTION)
    text_only = [{"role": "user", "content": "is there a square?"}]
    assert "".join(model.stream_chat(text_only, max_new_tokens=6)) == model.chat(text_only, max_new_tokens=6)


def test_text_pieces_keep_sentencepiece_word_spaces(model):
    tok = model.tokenizer
    ids = tok("a red circle at the top left", add_special_tokens=False)["input_ids"]
    whole = tok.decode(ids, skip_special_tokens=True).strip()
    assert "".join(tok.decode([i]) for i in ids) != whole  # one token at a time loses the spaces
    pieces = list(text_pieces(tok, ids))
    assert "".join(pieces) == whole == "a red circle at the top left" and " circle" in pieces


def byte_level_tokenizer():
    """A byte-level BPE (GPT-2 / Qwen style) small enough that multi-byte characters span tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<eos>"])
    backend.train_from_iterator(["the red circle is red", "a blue square"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")


def test_text_pieces_wait_for_whole_multibyte_characters():
    tok = byte_level_tokenizer()
    text = "red → 日本 circle ✓ é"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tok.decode(ids[:k]) for k in range(1, len(ids)))  # characters do span tokens
    pieces = list(text_pieces(tok, [*ids, tok.eos_token_id]))
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert "".join(text_pieces(tok, tok(" padded  ", add_special_tokens=False)["input_ids"])) == "padded"


def test_text_pieces_refuse_a_tokenizer_that_rewrites_earlier_text():
    class Rewriting:  # decodes "ab" then, one token later, "xbc": no piece can be taken back
        def decode(self, ids, skip_special_tokens):
            return ["a", "ab", "xbc"][len(ids) - 1]

    with pytest.raises(RuntimeError, match="rewrites earlier text"):
        list(text_pieces(Rewriting(), [0, 1, 2]))


@pytest.mark.parametrize("limit", [1, 3, 24])
def test_stream_text_equals_generate_text(model, limit):
    from unified_ar.sampling import generate_text, stream_text

    prompt = model.processor.chat_prompt([{"role": "user", "content": "is there a square?"}])
    image = generate_images(model, ["a red circle"], seeds=[1]).codes.flatten(1)
    for codes, ids in ((None, prompt), (image, model.processor.chat_prompt(QUESTION))):
        cfg = TextSamplingConfig(max_new_tokens=limit, temperature=0.7)
        expected = model.processor.decode(generate_text(model, [ids], codes, cfg, seeds=2)[0])
        assert "".join(stream_text(model, ids, codes, cfg, seed=2)) == expected
