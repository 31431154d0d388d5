"""The world's text tokenizer: sentencepiece trained on the world's text, saved
so that ``transformers.AutoTokenizer.from_pretrained(dir)`` loads it.

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
    config = {
        "tokenizer_class": "LlamaTokenizer",
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
    return out_dir
