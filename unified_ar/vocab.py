"""The merged vocabulary: text tokens, then the K image codes, padded to a multiple of 64.

Layout of the LLM's id space (``V`` = ``len(tokenizer)`` after the specials are added)::

    [0, V)                text tokens, including <|image_start|>, <|image_end|>, <|image|>, pad
    [V, V + K)            image codes 0..K-1 (``code_offset = V``)
    [V + K, padded)       unused rows so that the embedding matrix is a multiple of 64

An HF checkpoint may have more embedding rows than its tokenizer has tokens (Qwen2.5: 151,936
rows for 151,665 tokens; the spare rows were never trained). The layout does not keep them
apart: the added specials and the codes take ids from ``len(tokenizer)`` on, over the spare
rows, and :func:`resize_llm_vocab` starts every row from the first added id on (spare rows
included) at the mean of the trained rows.

Every special id is read from the tokenizer; none is hard-coded, because
tokenizers differ (Janus 1B and 7B do not even share a pad id).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

IMAGE_START = "<|image_start|>"
IMAGE_END = "<|image_end|>"
IMAGE_PLACEHOLDER = "<|image|>"
PAD_FALLBACK = "<|pad|>"
PAD_MULTIPLE = 64


def round_up(n: int, multiple: int = PAD_MULTIPLE) -> int:
    return (n + multiple - 1) // multiple * multiple


def ensure_special_tokens(tokenizer) -> list[str]:
    """Add the image specials (and a pad token if there is none) to ``tokenizer`` in place.

    Returns the tokens that were added (empty when the tokenizer already had them)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IMAGE_START, IMAGE_END, IMAGE_PLACEHOLDER) if t not in vocab]
    added: list[str] = []
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        added += missing
    if tokenizer.pad_token is None:
        # A dedicated pad token, not eos: padding must never be confused with a stop.
        tokenizer.add_special_tokens({"pad_token": PAD_FALLBACK})
        added.append(PAD_FALLBACK)
    return added


@dataclass(frozen=True)
class VocabLayout:
    """Ids of the merged vocabulary. Build it with :meth:`from_tokenizer`."""

    text_vocab_size: int
    codebook_size: int
    image_start_id: int
    image_end_id: int
    image_placeholder_id: int
    pad_id: int
    eos_id: int
    bos_id: int | None
    # len(tokenizer) before the image specials were added: rows from here on are new to the LLM
    base_vocab_size: int | None = None
    # rows of an LLM that came with more spare rows than the merged vocabulary needs (kept, unused)
    embedding_rows: int | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer, codebook_size: int) -> "VocabLayout":
        """Add missing specials to ``tokenizer`` (in place) and lay the codes out after its vocabulary."""
        if codebook_size <= 0:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}")
        base = len(tokenizer)
        ensure_special_tokens(tokenizer)
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos token; generation needs one to stop")
        ids = tokenizer.convert_tokens_to_ids([IMAGE_START, IMAGE_END, IMAGE_PLACEHOLDER])
        return cls(
            text_vocab_size=len(tokenizer),
            codebook_size=codebook_size,
            image_start_id=ids[0],
            image_end_id=ids[1],
            image_placeholder_id=ids[2],
            pad_id=tokenizer.pad_token_id,
            eos_id=tokenizer.eos_token_id,
            bos_id=tokenizer.bos_token_id,
            base_vocab_size=base,
        )

    @classmethod
    def sized(cls, text_vocab_size: int, codebook_size: int) -> "VocabLayout":
        """A layout for size estimates only (``model-info`` without the tokenizer on this
        machine): the sizes are right, every special id is -1 and must not be used."""
        return cls(text_vocab_size, codebook_size, -1, -1, -1, -1, -1, None)

    @property
    def code_offset(self) -> int:
        """Id of image code 0."""
        return self.text_vocab_size

    @property
    def vocab_size(self) -> int:
        """Ids actually used: text plus codes."""
        return self.text_vocab_size + self.codebook_size

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the LLM embedding and output head (a multiple of 64, or the LLM's own larger count)."""
        return max(round_up(self.vocab_size), self.embedding_rows or 0)

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes (any shape, values in [0, K)) -> LLM ids (same shape)."""
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"image codes must lie in [0, {self.codebook_size}); got range "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.long() + self.code_offset

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM ids of image tokens (any shape) -> codes (same shape); other ids are an error."""
        if ids.numel() and not bool(self.is_image_id(ids).all()):
            bad = ids[~self.is_image_id(ids)][:5].tolist()
            raise ValueError(f"ids_to_codes: ids {bad} are not image ids [{self.code_offset}, {self.vocab_size})")
        return ids.long() - self.code_offset

    def is_image_id(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool mask (same shape as ``ids``) of ids that are image codes."""
        return (ids >= self.code_offset) & (ids < self.vocab_size)

    def image_id_range(self) -> tuple[int, int]:
        """``[start, stop)`` of the image ids."""
        return self.code_offset, self.vocab_size


def resize_llm_vocab(llm, layout: VocabLayout) -> VocabLayout:
    """Resize the LLM's input embeddings and output head to ``layout.padded_vocab_size``.

    Rows from the first id the tokenizer did not have on (``layout.base_vocab_size``: the image
    specials, the codes, the checkpoint's untrained spare rows they land on, the padding) start
    at the mean of the trained rows below it, in input and output matrices: a new token then
    looks like an "average" token instead of a random or zero outlier, so the first steps do not
    spike the loss. Works for tied and untied heads. A matrix already of the padded size is not
    resized (a saved unified model being rebuilt: its weights are loaded over the rows next). An
    LLM with more rows than the merged vocabulary needs keeps them all (unused). Returns the
    layout with the LLM's row count.
    """
    old = llm.get_input_embeddings().weight.shape[0]
    new = layout.padded_vocab_size
    if new < layout.vocab_size:
        raise AssertionError("padded vocab smaller than the used vocab")
    if old > new:
        layout = replace(layout, embedding_rows=old)
    elif old < new:
        # mean_resizing=False: transformers would draw from a Gaussian around the mean; we want the mean itself.
        llm.resize_token_embeddings(new, mean_resizing=False)
    _mean_init_rows(llm, min(old, layout.base_vocab_size or old))
    return layout


def _mean_init_rows(llm, trained: int) -> None:
    """Rows ``trained:`` of the input and output matrices (and head bias) := the mean of rows ``:trained``."""
    with torch.no_grad():
        matrices = [llm.get_input_embeddings().weight]
        head = llm.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != matrices[0].data_ptr():
            matrices.append(head.weight)
        for weight in matrices:
            if weight.device.type == "meta":
                continue
            weight[trained:] = weight[:trained].mean(dim=0, keepdim=True)
        if head is not None and getattr(head, "bias", None) is not None and head.bias.device.type != "meta":
            head.bias[trained:] = head.bias[:trained].mean()
