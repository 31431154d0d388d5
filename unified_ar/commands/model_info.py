"""``unified-ar model-info --config FILE``: build the unified model on the meta device (no weights,
no memory) and print parameter counts per part and the memory one bf16 training step needs.

Memory model (mixed precision as DeepSpeed runs it, one GPU, no ZeRO sharding):
weights 2 B/param (bf16, all parts); gradients 2 B/trainable param; AdamW 12 B/trainable
param (fp32 master copy + two moments); activations from Korthikanti et al. 2022
(``s*b*h*(34 + 5*a*s/h)`` bytes per layer without recomputation, ``2*s*b*h`` per layer
with activation checkpointing) plus fp32 logits ``4*s*b*V`` for the cross-entropy.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

GIB = 2**30
WORLD_VOCAB = 192  # train_text_tokenizer's default vocab_size


@dataclass
class MemoryEstimate:
    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits


def count(module) -> tuple[int, int]:
    """(all, trainable) parameter counts; tied weights counted once."""
    seen, total, trainable = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def parts(model) -> dict[str, object]:
    out = {"llm": model.llm, "vq": model.vq, "toklip": model.toklip, "projector": model.projector,
           "gen_projector": model.gen_projector}
    return {k: v for k, v in out.items() if v is not None}


def estimate_memory(model, seq_len: int, micro_batch: int, checkpointing: bool) -> MemoryEstimate:
    total, trainable = count(model)
    c = model.llm.config
    h, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    s, b = seq_len, micro_batch
    per_layer = 2 * s * b * h if checkpointing else s * b * h * (34 + 5 * heads * s / h)
    return MemoryEstimate(
        weights=2.0 * total, grads=2.0 * trainable, optimizer=12.0 * trainable,
        activations=per_layer * layers, logits=4.0 * s * b * model.layout.padded_vocab_size,
    )


def build_on_meta(cfg, text_vocab_size: int):
    """The model on the meta device; the tokenizer is read only if its directory exists here.

    Built with sdpa attention: the backend changes no parameter, and flash-attn need not be
    installed to size a model."""
    from unified_ar.modeling import UnifiedARModel

    cfg = replace(cfg, llm=replace(cfg.llm, attn_implementation="sdpa"))
    if cfg.tokenizer is not None and Path(cfg.tokenizer).is_dir():
        return UnifiedARModel.from_config(cfg, device="meta", meta_ok=True), f"tokenizer {cfg.tokenizer}"
    note = f"tokenizer {cfg.tokenizer} not here: text vocabulary taken as {text_vocab_size}"
    return UnifiedARModel(cfg, None, device="meta", meta_ok=True, text_vocab_size=text_vocab_size), note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="unified-ar model-info", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a model config YAML (configs/model/*.yaml)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--text-vocab-size", type=int, default=None,
                   help="text vocabulary when the tokenizer directory is not on this machine (default: "
                        f"the vocab_size of a path / inline LLM config, else {WORLD_VOCAB}, the Shapes tokenizer)")
    args, overrides = p.parse_known_args(argv)
    from unified_ar.config import load_config
    from unified_ar.llm import llm_hf_config
    from unified_ar.modeling import UnifiedConfig

    cfg = load_config(UnifiedConfig, args.config, overrides)
    vocab = args.text_vocab_size
    if vocab is None:
        from_hf = cfg.llm.path is not None or "model_type" in cfg.llm.hf_config
        vocab = llm_hf_config(cfg.llm, None, allow_inline=True).vocab_size if from_hf else WORLD_VOCAB
    model, note = build_on_meta(cfg, vocab)
    print(f"config: {args.config}  ({note})")
    print(f"vocabulary: text {model.layout.text_vocab_size} + codes {model.layout.codebook_size} "
          f"-> {model.layout.padded_vocab_size} rows; image {model.grid[0]}x{model.grid[1]} tokens")
    print(f"{'part':<14}{'params':>16}{'trainable':>16}")
    for name, module in parts(model).items():
        total, trainable = count(module)
        print(f"{name:<14}{total:>16,}{trainable:>16,}")
    total, trainable = count(model)
    print(f"{'total':<14}{total:>16,}{trainable:>16,}")
    for ckpt in (False, True):
        m = estimate_memory(model, args.seq_len, args.micro_batch, ckpt)
        print(f"bf16 training step, seq {args.seq_len} x micro-batch {args.micro_batch}, "
              f"{'with' if ckpt else 'without'} activation checkpointing: {m.total / GIB:.2f} GiB "
              f"(weights {m.weights / GIB:.2f}, grads {m.grads / GIB:.2f}, AdamW {m.optimizer / GIB:.2f}, "
              f"activations {m.activations / GIB:.2f}, logits {m.logits / GIB:.2f})")
    return 0
