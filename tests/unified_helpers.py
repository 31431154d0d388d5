"""Tiny tokenizer and unified-model builders shared by the unified-model tests."""
from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "a red circle at the top left", "a blue square in the center", "a green triangle at the bottom",
    "what color is the circle?", "how many shapes are there?", "is there a square?", "yes", "no",
    "two large yellow squares on the right", "a small magenta triangle", "one", "two", "three",
]

TINY_VQ = dict(codebook_size=32, codebook_embed_dim=8, z_channels=32, ch=32, num_res_blocks=1,
               encoder_ch_mult=[1, 1, 1], decoder_ch_mult=[1, 1, 1])


def tiny_tokenizer(directory: Path):
    """The Shapes world's tokenizer recipe (chat template, specials) trained on a few sentences."""
    from transformers import AutoTokenizer

    from unified_ar.train.shapes.text_tokenizer import train_text_tokenizer

    train_text_tokenizer(SENTENCES * 4, directory, vocab_size=90)
    return AutoTokenizer.from_pretrained(directory)


def tiny_config(**changes):
    """16 px images, 4x4 = 16 codes of a 32-code VQ, the 'test' LLM (hidden 32, 2 layers)."""
    from unified_ar.config import from_dict
    from unified_ar.modeling import UnifiedConfig

    data = {
        "llm": {"preset": "test", "attn_implementation": "eager"},
        "vq": {"preset": "VQ-shapes", "overrides": TINY_VQ},
        "toklip": {"preset": "TokLIP-shapes", "overrides": {}},
        "image_size": 16,
        "comprehension_features": "vq",
    }
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(UnifiedConfig, data, "tiny_config")


def tiny_model(directory: Path, seed: int = 0, **changes):
    from unified_ar.modeling import UnifiedARModel

    torch.manual_seed(seed)
    model = UnifiedARModel(tiny_config(**changes), tiny_tokenizer(directory))
    return model.eval()


def randomize_(module: torch.nn.Module, seed: int = 1, scale: float = 0.5) -> None:
    """Give every parameter random values (zero-initialised projectors would make tests vacuous)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale / max(1, p.shape[-1]) ** 0.5)
