"""The language model part: size presets, building an ``AutoModelForCausalLM``, attention backends.

An LLM comes from exactly one of
- ``path``: a local Hugging Face directory (real scale, e.g. Qwen2.5-1.5B-Instruct), weights loaded;
- ``preset`` (+ optional ``hf_config`` overrides): a size preset of a transformers architecture
  (Llama unless the preset names its ``model_type``), random init;
- ``hf_config`` with a ``model_type`` key: any architecture, random init.

``model-info`` may describe a real-scale model whose directory is not on this
machine: then the inline ``hf_config`` (the directory's ``config.json``) stands
in for it, on the meta device only (:func:`llm_hf_config` with ``allow_inline``).
"""
from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from unified_ar.config import ConfigError

ATTENTION_BACKENDS = ("eager", "sdpa", "flash_attention_2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Sizes for random init; Llama architecture unless a preset names its ``model_type``.
# Parameter counts exclude the merged vocabulary.
LLM_PRESETS: dict[str, dict[str, Any]] = {
    # tests: the transformers model-tester size
    "test": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),
    # the CPU demo default (hidden 128 x 3 layers learns the Shapes world in minutes, docs/DEMO.md).
    # Qwen3's architecture is Llama's plus an RMSNorm on each head's queries and keys (QK-norm):
    # the demo's VQA learns faster with it (docs/MODEL.md, "The model").
    "tiny": dict(model_type="qwen3", hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024),
    # ~100M parameters (GPT-2-small shape)
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=12, max_position_embeddings=2048),
    # 1B class (TinyLlama shape)
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, max_position_embeddings=4096),
}


@dataclass
class LLMConfig:
    preset: str | None = "tiny"
    path: str | None = None
    hf_config: dict[str, Any] = field(default_factory=dict)
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool = False

    def __post_init__(self):
        if self.path is None and self.preset is None and "model_type" not in self.hf_config:
            raise ValueError("llm: give a path, a preset, or an hf_config with model_type")
        if self.preset is not None and self.preset not in LLM_PRESETS:
            raise ValueError(f"llm.preset: unknown preset {self.preset!r} (known: {', '.join(LLM_PRESETS)})")


def check_attention_backend(name: str, device: str | torch.device = "cpu") -> None:
    """Raise a clear error unless attention backend ``name`` can run here."""
    if name not in ATTENTION_BACKENDS:
        raise ConfigError(f"llm.attn_implementation: unknown attention backend {name!r} "
                          f"(choose one of {', '.join(ATTENTION_BACKENDS)})")
    if name == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("llm.attn_implementation: flash_attention_2 needs the flash-attn package, "
                              "which is not installed (pip install flash-attn, or use sdpa)")
        if torch.device(device).type not in ("cuda", "meta"):
            raise ConfigError("llm.attn_implementation: flash_attention_2 runs on CUDA only; use sdpa on CPU")


def _vocab_kwargs(vocab_size: int | None) -> dict:
    return {} if vocab_size is None else {"vocab_size": vocab_size}


def llm_hf_config(cfg: LLMConfig, vocab_size: int | None = None, allow_inline: bool = False):
    """The transformers config the LLM is built from (no weights are read)."""
    from transformers import AutoConfig

    if cfg.path is not None:
        path = Path(cfg.path)
        if path.is_dir():
            hf = AutoConfig.from_pretrained(path, local_files_only=True)
            for key, value in cfg.hf_config.items():
                setattr(hf, key, value)
            return hf
        if not (allow_inline and "model_type" in cfg.hf_config):
            raise ConfigError(f"llm.path: {path} is not a directory (a local Hugging Face model is needed)")
    if "model_type" in cfg.hf_config:
        data = dict(cfg.hf_config)
        return AutoConfig.for_model(data.pop("model_type"), **data)
    params = {**LLM_PRESETS[cfg.preset], **cfg.hf_config, **_vocab_kwargs(vocab_size)}
    # hidden / heads, as Llama derives it; Qwen3's config would otherwise default to 128
    params.setdefault("head_dim", params["hidden_size"] // params["num_attention_heads"])
    return AutoConfig.for_model(params.pop("model_type", "llama"), **params)


def build_llm(cfg: LLMConfig, vocab_size: int, device: str | torch.device = "cpu", meta_ok: bool = False):
    """Build the ``AutoModelForCausalLM`` (weights from ``cfg.path``, else random init).

    ``vocab_size`` is the text vocabulary (the caller resizes for image codes);
    on the meta device a missing ``path`` may be replaced by the inline ``hf_config``."""
    from transformers import AutoModelForCausalLM

    on_meta = torch.device(device).type == "meta"
    check_attention_backend(cfg.attn_implementation, device)
    dtype = DTYPES[cfg.dtype]
    if cfg.path is not None and Path(cfg.path).is_dir() and not on_meta:
        llm = AutoModelForCausalLM.from_pretrained(
            cfg.path, local_files_only=True, dtype=dtype, attn_implementation=cfg.attn_implementation
        )
    else:
        hf = llm_hf_config(cfg, vocab_size if cfg.path is None else None, allow_inline=on_meta and meta_ok)
        with torch.device(device):
            llm = AutoModelForCausalLM.from_config(hf, dtype=dtype, attn_implementation=cfg.attn_implementation)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(llm)
    return llm


def enable_activation_checkpointing(llm) -> None:
    """Checkpoint the decoder layers' activations. transformers 5.24 renamed
    ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``; both occur across 5.x."""
    enable = getattr(llm, "activation_checkpointing_enable", None) or llm.gradient_checkpointing_enable
    enable()


def llm_hidden_size(llm) -> int:
    return int(llm.get_input_embeddings().weight.shape[1])


def max_context(llm) -> int:
    """Longest sequence the LLM's position scheme was configured for."""
    value = getattr(llm.config, "max_position_embeddings", None)
    if value is None:
        raise ValueError(f"{type(llm.config).__name__} has no max_position_embeddings; cannot check prompt length")
    return int(value)


class LLMStep(NamedTuple):
    """What one LLM pass gives the rest of the project: logits [B,L,V] and the KV cache (or None)."""

    logits: torch.Tensor
    cache: Any


def cache_keyword(llm) -> str:
    """The name of the KV-cache argument (and output field) of ``llm.forward``: transformers
    5.24 renamed ``past_key_values`` to ``cache``; both spellings occur across 5.x."""
    params = inspect.signature(llm.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise TypeError(f"{type(llm).__name__}.forward takes neither `cache` nor `past_key_values`; "
                    "cannot pass it a KV cache")
