"""The world's text tokenizer: sentencepiece trained on the world's text, saved
(``tokenizer.model``, ``tokenizer.json``, ``tokenizer_config.json``) so that
``transformers.AutoTokenizer.from_pretrained(dir)`` loads it.

The special tokens the unified model needs are pieces of the sentencepiece
model itself (user-defined symbols), so every loader sees the same ids; the
chat template uses single-token role markers because every token costs steps
on a CPU.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

IMAGE_START = "<|image_start|>"
IMAGE_END = "<|image_end|>"
IMAGE_PLACEHOLDER = "<|image|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_PIECES = [IMAGE_START, IMAGE_END, IMAGE_PLACEHOLDER, USER, ASSISTANT]
WHITESPACE_RUN = r"[ \t\r\n]+"  # becomes one space, as sentencepiece normalises whitespace

# bos, then per message: role marker, a space, content (+ eos after the assistant's).
# The space makes a word after a role marker tokenize as it does mid-sentence
# ("▁what", not "w" "hat"), so the model sees one spelling of each word.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + " {{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT + " {{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def train_text_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 192) -> Path:
    """Train a BPE sentencepiece model on ``texts`` and save an HF-loadable directory."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        pad_piece="<pad>",
        user_defined_symbols=SPECIAL_PIECES,
        num_threads=1,  # determinism: same text, same model bytes
        minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    # first as the sentencepiece LlamaTokenizer, for transformers to convert; then as the fast
    # tokenizer that tokenizer.json defines (LlamaTokenizer would rebuild its own pipeline)
    _write_config(out_dir, "LlamaTokenizer")
    _write_fast_tokenizer(out_dir)
    _write_config(out_dir, "PreTrainedTokenizerFast")
    return out_dir


def _write_fast_tokenizer(out_dir: Path) -> None:
    """``tokenizer.json``: the sentencepiece model as transformers converts it, plus the
    whitespace normalisation sentencepiece itself applies (a run of spaces, tabs or newlines ->
    one space), which the conversion drops: without it the newline of LLaVA's ``<image>\nwhat``
    vanished and the word after it lost its word-start marker ("w" "hat", not "▁what"), so the
    question after an image, as in every VQA prompt, had a spelling of its own."""
    from tokenizers import Regex, normalizers
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True).backend_tokenizer
    if backend.normalizer is not None:
        raise RuntimeError(f"{out_dir}: the converted tokenizer has a normaliser of its own "
                           f"({backend.normalizer}); text_tokenizer.py expects none")
    backend.normalizer = normalizers.Replace(Regex(WHITESPACE_RUN), " ")
    backend.save(str(out_dir / "tokenizer.json"))


def _write_config(out_dir: Path, tokenizer_class: str) -> None:
    config = {
        "tokenizer_class": tokenizer_class,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": False,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": 4096,
        "extra_special_tokens": list(SPECIAL_PIECES),
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
