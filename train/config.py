"""``TrainConfig``: everything the engine and the generic loop need, as one typed dataclass.

The DeepSpeed JSON is generated from it (:func:`unified_ar.train.engine.deepspeed_config`),
so a run is described by this config alone; the files in ``configs/deepspeed/`` are
the generated JSON of common presets, for readers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


# the linear layers of Llama / Qwen-style decoders (attention and MLP)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoRAConfig:
    """``train.lora``: LoRA adapters on the unified model's LLM, through PEFT (train/lora.py); the
    LLM's base weights stay frozen. ``target_modules``: PEFT's (module-name suffixes).
    ``new_rows``: also train the vocabulary rows the base tokenizer lacked (image specials, image
    codes) in the input embeddings and output head (PEFT's trainable tokens): the adapters alone
    cannot learn to draw from a base that never drew. ``save``: ``merged`` writes a plain model
    folder (no peft needed to load it); ``adapter`` writes the adapter and a reference to its
    base (``init_from``) instead of the LLM's weights."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    new_rows: bool = True
    save: Literal["merged", "adapter"] = "merged"

    def __post_init__(self) -> None:
        checks = [(self.r >= 1, "lora.r must be >= 1"), (self.alpha > 0, "lora.alpha must be > 0"),
                  (0.0 <= self.dropout < 1.0, "lora.dropout must be in [0, 1)"),
                  (bool(self.target_modules), "lora.target_modules is empty")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class TrainConfig:
    """Optimisation, distribution, checkpointing and logging of one training run.

    Steps are optimiser steps; one step consumes ``grad_accum_steps`` micro-batches
    of ``micro_batch_size`` rows on every rank.
    """

    seed: int = 0
    max_steps: int = 1000
    micro_batch_size: int = 8  # rows per rank per micro-batch
    grad_accum_steps: int = 1
    # AdamW + cosine schedule with linear warmup (to lr) and decay to lr * min_lr_ratio.
    # muon: Muon on the hidden weight matrices (nn.Linear weights but the LM head), AdamW on the
    # rest, one lr (Muon's update is scaled to AdamW's RMS); ZeRO-0 with fp32 weights only
    # (train/muon.py; the demo's VQA 0.70 -> 0.75-0.90 over four runs in the same seconds, docs/DEMO.md;
    # Muon wants a lower lr than AdamW there: 7e-4, docs/DEMO.md "Learning rate 7e-4").
    optimizer: Literal["adamw", "muon"] = "adamw"
    muon_momentum: float = 0.95
    lr: float = 3.0e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1.0e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    # DeepSpeed ZeRO: 0 = plain data parallel, 1 = optimizer states, 2 = + gradients, 3 = + parameters.
    zero_stage: int = 0
    offload_optimizer: bool = False  # ZeRO >= 1: optimizer states and step on the CPU (DeepSpeedCPUAdam)
    offload_params: bool = False  # ZeRO-3 only: parameters live on the CPU
    # auto: bf16 on GPU, fp32 on CPU. bf16: DeepSpeed's bf16 (bf16 weights, fp32 master copy).
    # autocast_bf16: fp32 weights and optimiser, forward under torch.autocast(bf16) -- the fast
    # path on CPUs with AMX / AVX512-BF16 (1.8x per VQ-shapes step here, docs/TRAINING.md).
    precision: Literal["auto", "fp32", "bf16", "autocast_bf16"] = "auto"
    gradient_checkpointing: bool = False
    # Conv weights in channels-last (NHWC) memory once DeepSpeed has set up (its init broadcast
    # cannot view NHWC weights as bytes): same values, faster oneDNN convolutions (the VQ stage,
    # docs/TOKENIZER.md). ZeRO-0 only: ZeRO-1+ move parameters into flat buffers.
    channels_last: bool = False
    # Which parameters train: empty `trainable` = every parameter that requires grad;
    # otherwise only names starting with one of these prefixes. `frozen` prefixes are then removed.
    trainable: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    # Checkpoints: a DeepSpeed checkpoint every `save_every` steps (0: only at the end),
    # the newest `keep_checkpoints` kept.
    save_every: int = 0
    keep_checkpoints: int = 2
    export_final: bool = True  # write a from_pretrained directory (run_dir/export) at the end
    # Logging: console (tqdm) every `log_every` steps, metrics.jsonl every step.
    log_every: int = 10
    progress_bar: bool = True
    report_to: Literal["none", "wandb"] = "none"
    wandb_project: str = "unified-ar"
    wandb_mode: Literal["offline", "online"] = "offline"
    # wandb, end of a unified-model stage: images drawn for the first `wandb_samples` of `wandb_prompts`
    # (empty: of the captions of the first captions data source), with the model's sampling settings
    wandb_samples: int = 4
    wandb_prompts: list[str] = field(default_factory=list)
    # A non-finite loss skips the micro-batch; this many in a row stop the run (with a checkpoint).
    max_nonfinite_in_a_row: int = 8
    # Extra DeepSpeed JSON merged over the generated one (expert use; keys are DeepSpeed's).
    deepspeed_overrides: dict[str, Any] = field(default_factory=dict)
    # LoRA adapters on the LLM instead of training its weights (the unified stage; None: off)
    lora: LoRAConfig | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.micro_batch_size >= 1, "micro_batch_size must be >= 1"),
            (self.grad_accum_steps >= 1, "grad_accum_steps must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.zero_stage in (0, 1, 2, 3), f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}"),
            (not self.offload_optimizer or self.zero_stage >= 1, "offload_optimizer needs zero_stage >= 1"),
            (not self.offload_params or self.zero_stage == 3, "offload_params needs zero_stage 3"),
            (not self.channels_last or self.zero_stage == 0, "channels_last needs zero_stage 0"),
            (self.optimizer == "adamw" or self.zero_stage == 0,
             "optimizer muon needs zero_stage 0 (ZeRO-1/2/3 hand the optimizer flat 1-D partitions, not "
             "matrices; docs/TRAINING.md)"),
            (self.optimizer == "adamw" or self.precision != "bf16",
             "optimizer muon needs fp32 weights: precision fp32 or autocast_bf16 (DeepSpeed's bf16 "
             "flattens the parameters)"),
            (0.0 <= self.muon_momentum < 1.0, "muon_momentum must be in [0, 1)"),
            (self.save_every >= 0, "save_every must be >= 0"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.wandb_samples >= 0, "wandb_samples must be >= 0"),
            (self.max_nonfinite_in_a_row >= 1, "max_nonfinite_in_a_row must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
