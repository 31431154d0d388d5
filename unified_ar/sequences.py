"""The one place where sequences are laid out, for training and for sampling.

Layouts (the role markers come from the tokenizer's chat template, or from
:data:`DEFAULT_CHAT_TEMPLATE` when it has none):

- comprehension: ``<user> <|image_start|> <|image|>xN <|image_end|> question <assistant> answer <eos>``,
  loss on the assistant turns only; ``<image>`` in a human turn marks where the image goes;
- generation: ``<user> caption <assistant> <|image_start|> id_1..id_N <|image_end|> <eos>``,
  loss on the image ids, ``<|image_end|>`` and ``<eos>``; a dropped caption becomes the
  unconditional prompt, the chat-templated empty caption.

A conversation is tokenised turn by turn: the ids of a prefix are exactly the
ids the sampler is later given as its prompt, so training and sampling see the
same token boundaries (tokenising the whole text at once could merge a
generation prompt with the answer's first characters).
"""
from __future__ import annotations

from dataclasses import dataclass

from unified_ar.vocab import IMAGE_PLACEHOLDER, VocabLayout

IGNORE = -100
IMAGE_MARK = "<image>"  # LLaVA's marker in a human turn

# Used only when the tokenizer has no chat template of its own.
DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Example:
    """One laid-out sequence. ``labels[i] == -100`` means no loss at position ``i``."""

    input_ids: list[int]
    labels: list[int]
    num_images: int


def normalize_messages(conversation: list[dict]) -> list[dict]:
    """LLaVA ``{"from","value"}`` or HF ``{"role","content"}`` turns -> ``{"role","content"}``."""
    out = []
    for i, turn in enumerate(conversation):
        if "from" in turn and "value" in turn:
            role, content = turn["from"], turn["value"]
        elif "role" in turn and "content" in turn:
            role, content = turn["role"], turn["content"]
        else:
            raise ValueError(f"conversation turn {i}: expected keys from/value or role/content, got {sorted(turn)}")
        if role not in _ROLES:
            raise ValueError(f"conversation turn {i}: unknown role {role!r} (known: {', '.join(_ROLES)})")
        if not isinstance(content, str):
            raise ValueError(f"conversation turn {i}: content must be a string, got {type(content).__name__}")
        out.append({"role": _ROLES[role], "content": content})
    return out


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(
        messages, chat_template=template, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def _encode(tokenizer, text: str) -> list[int]:
    # Specials (bos, role markers) come from the template text, never from the tokenizer's own additions.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _expand_images(layout: VocabLayout, ids: list[int], labels: list[int], n: int) -> tuple[list[int], list[int], int]:
    """Each ``<|image|>`` id becomes ``<|image_start|> <|image|>xN <|image_end|>`` (labels -100)."""
    out_ids, out_labels, count = [], [], 0
    for tok, lab in zip(ids, labels):
        if tok == layout.image_placeholder_id:
            if lab != IGNORE:
                raise ValueError("an image placeholder appears in an assistant turn; images belong to user turns")
            out_ids += [layout.image_start_id] + [layout.image_placeholder_id] * n + [layout.image_end_id]
            out_labels += [IGNORE] * (n + 2)
            count += 1
        else:
            out_ids.append(tok)
            out_labels.append(lab)
    return out_ids, out_labels, count


def _turns_to_ids(
    tokenizer, messages: list[dict], end_with_prompt: bool
) -> tuple[list[int], list[int], list[int]]:
    """Tokenise turn by turn; assistant turns get labels, everything else -100.

    Returns ids, labels and the ids of the last turn."""
    ids: list[int] = []
    labels: list[int] = []
    prev = ""
    piece: list[int] = []
    for i, msg in enumerate(messages):
        nxt_is_assistant = i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
        gen_prompt = msg["role"] != "assistant" and (nxt_is_assistant or (i + 1 == len(messages) and end_with_prompt))
        text = _render(tokenizer, messages[: i + 1], add_generation_prompt=gen_prompt)
        if not text.startswith(prev):
            raise ValueError(
                "the chat template is not prefix-consistent (rendering more turns changed earlier text); "
                "sequences.py needs each turn to extend the previous rendering"
            )
        piece = _encode(tokenizer, text[len(prev):])
        ids += piece
        labels += piece if msg["role"] == "assistant" else [IGNORE] * len(piece)
        prev = text
    return ids, labels, piece


def comprehension_example(
    layout: VocabLayout, tokenizer, conversation: list[dict], num_image_tokens: int
) -> Example:
    """A (multi-turn) conversation about images; ``<image>`` in a human turn places an image.

    The last assistant turn always ends in ``eos`` (appended, with a label, when the
    template's end-of-turn is something else)."""
    messages = normalize_messages(conversation)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("comprehension_example: the conversation has no assistant turn to learn from")
    for m in messages:
        if m["role"] == "assistant" and IMAGE_MARK in m["content"]:
            raise ValueError(f"comprehension_example: {IMAGE_MARK} in an assistant turn")
        m["content"] = m["content"].replace(IMAGE_MARK, IMAGE_PLACEHOLDER)
    ids, labels, last = _turns_to_ids(tokenizer, messages, end_with_prompt=False)
    if messages[-1]["role"] == "assistant" and layout.eos_id not in last:
        ids.append(layout.eos_id)
        labels.append(layout.eos_id)
    ids, labels, count = _expand_images(layout, ids, labels, num_image_tokens)
    return Example(ids, labels, count)


def generation_prompt(layout: VocabLayout, tokenizer, caption: str | None) -> list[int]:
    """Prompt ids for text-to-image, ending just before ``<|image_start|>``.

    ``caption=None`` gives the unconditional prompt (the templated empty caption)."""
    del layout  # the prompt holds no image ids; kept for a uniform signature
    messages = [{"role": "user", "content": caption if caption is not None else ""}]
    ids, _, _ = _turns_to_ids(tokenizer, messages, end_with_prompt=True)
    return ids


def generation_example(layout: VocabLayout, tokenizer, caption: str, codes, drop_caption: bool) -> Example:
    """Text-to-image training sequence for ``codes`` (a flat sequence of N codes, list or tensor [N])."""
    import torch

    codes = torch.as_tensor(codes).reshape(-1)
    prompt = generation_prompt(layout, tokenizer, None if drop_caption else caption)
    image = layout.codes_to_ids(codes).tolist()
    tail = [layout.image_end_id, layout.eos_id]
    input_ids = prompt + [layout.image_start_id] + image + tail
    labels = [IGNORE] * (len(prompt) + 1) + image + tail
    return Example(input_ids, labels, 0)


def text_example(layout: VocabLayout, tokenizer, text: str) -> Example:
    """Plain language modelling: ``[bos] text eos``, loss on every token; the bos only where the
    tokenizer has one (Qwen's has none: its pretraining separates documents by the end token)."""
    head = [layout.bos_id] if layout.bos_id is not None else []
    ids = head + _encode(tokenizer, text) + [layout.eos_id]
    return Example(ids, list(ids), 0)


def chat_prompt(layout: VocabLayout, tokenizer, messages: list[dict], num_image_tokens: int) -> list[int]:
    """Prompt ids for the next assistant turn; ``<image>`` in user turns places images."""
    messages = normalize_messages(messages)
    if messages[-1]["role"] == "assistant":
        raise ValueError("chat_prompt: the last message is the assistant's; nothing to answer")
    for m in messages:
        m["content"] = m["content"].replace(IMAGE_MARK, IMAGE_PLACEHOLDER)
    ids, _, _ = _turns_to_ids(tokenizer, messages, end_with_prompt=True)
    ids, _, _ = _expand_images(layout, ids, [IGNORE] * len(ids), num_image_tokens)
    return ids
