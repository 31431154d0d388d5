"""Training throughput of the engine against a plain PyTorch AdamW loop, and packing efficiency.

    python -m unified_ar.eval.bench_train [--steps 10] [--rounds 16] [--batch 16] [--seq 64] [--max-length 256 512]
    python -m unified_ar.eval.bench_train --vq-precision [--threads 2] [--rounds 6]
    python -m unified_ar.eval.bench_train --optimizers [--threads 2] [--batch 2] [--seq 234]

Both loops train the same model (a Llama of the demo LLM's size: hidden 128, 3 layers)
on the same batch with the same AdamW, schedule and clipping; rounds alternate
between them so that drift of a shared 2-core machine hits both alike. Prints
tokens/s of each, their ratio (target >= 0.9 at ZeRO-0 on one rank) and the
non-padding fraction of Shapes-world batches with and without packing (target >= 0.95).
``--vq-precision`` instead times VQ-shapes training steps (batch 8, 96 px) through the engine
at ``precision: fp32`` and ``autocast_bf16``, alternating, and prints their ratio.
``--optimizers`` times the plain loop with AdamW's ``foreach`` kernel, its ``fused`` kernel (what
the engine uses, :data:`~unified_ar.train.engine.ADAMW_KERNEL`) and ``train.optimizer: muon``
(:class:`~unified_ar.train.muon.MuonAdamW`), alternating, and prints their ratios.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from unified_ar.eval.timing import alternating_rounds


@dataclass
class _Output:
    loss: torch.Tensor


class CausalLM(nn.Module):
    """``forward(batch) -> .loss`` around a transformers causal LM."""

    def __init__(self, vocab_size: int, seed: int = 0):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                             attn_implementation="sdpa")
        self.lm = LlamaForCausalLM(config)

    def forward(self, batch: dict) -> _Output:
        out = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return _Output(loss=out.loss)


class PlainLoop:
    """The textbook loop: forward, backward, clip, optimiser, schedule, zero_grad. Call it for
    seconds per step. ``optimizer`` builds the optimiser from (model, AdamW's decay groups,
    config); default: AdamW with the engine's kernel."""

    def __init__(self, model: nn.Module, config, batch: dict, optimizer=None):
        from unified_ar.train.engine import cosine_schedule

        self.model, self.config, self.batch = model, config, batch
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in self.params if p.ndim >= 2], "weight_decay": config.weight_decay},
                  {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}]
        self.optimizer = (optimizer or _adamw())(model, groups, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_schedule(config))

    def __call__(self, steps: int) -> float:
        model, config, batch, params = self.model, self.config, self.batch, self.params
        optimizer, scheduler = self.optimizer, self.scheduler
        start = time.perf_counter()
        for _ in range(steps):
            loss = model(batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss.detach())  # the loop logs its loss, as the engine does
        return (time.perf_counter() - start) / steps


def engine_loop(engine, batch: dict, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        engine.micro_step(batch)
    return (time.perf_counter() - start) / steps


def throughput(args: argparse.Namespace) -> tuple[float, float, float]:
    """(plain tokens/s, engine tokens/s, median of per-round ratios).

    Rounds of ``--steps`` steps alternate between the loops, in ABBA order, so that load
    from other processes on a shared machine falls on both alike; the ratio is the
    median over rounds of engine / plain throughput."""
    from unified_ar.train.engine import build_engine

    config, batch = _lm_setup(args)
    plain_model = CausalLM(args.vocab)
    engine = build_engine(copy.deepcopy(plain_model), config)
    plain = PlainLoop(plain_model, config, batch)
    plain(5)
    engine_loop(engine, batch, 5)
    times = alternating_rounds({"plain": lambda: plain(args.steps),
                                "engine": lambda: engine_loop(engine, batch, args.steps)}, args.rounds)
    plain, ours = times["plain"], times["engine"]
    tokens = args.batch * args.seq
    ratio = statistics.median(p / o for p, o in zip(plain, ours))
    return tokens / statistics.median(plain), tokens / statistics.median(ours), ratio


def _lm_setup(args: argparse.Namespace) -> tuple:
    """(TrainConfig, batch of random ids [batch, seq]) for the language-model benchmarks."""
    from unified_ar.train.config import TrainConfig

    config = TrainConfig(max_steps=10**6, micro_batch_size=args.batch, lr=1e-3, warmup_steps=10,
                         zero_stage=0, precision="fp32", progress_bar=False)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    return config, {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


def _adamw(kernel: dict | None = None):
    """An optimiser factory for :class:`PlainLoop`: AdamW with ``kernel`` (default the engine's)."""
    from unified_ar.train.engine import ADAMW_KERNEL

    def build(model, groups, config):
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                 **(ADAMW_KERNEL if kernel is None else kernel))

    return build


def _muon(model, groups, config):
    from unified_ar.train.engine import muon_optimizer

    return muon_optimizer(model, list(model.named_parameters()), config)


OPTIMIZERS = {"adamw_foreach": _adamw({"foreach": True}), "adamw_fused": _adamw({"fused": True}), "muon": _muon}


def optimizer_steps(args: argparse.Namespace) -> dict[str, float]:
    """{optimiser: s/step} of the plain loop on the demo-size LLM (medians of ``--rounds``
    alternating rounds of ``--steps`` steps; copies of one model)."""
    config, batch = _lm_setup(args)
    model = CausalLM(args.vocab)
    loops = {name: PlainLoop(copy.deepcopy(model), config, batch, build) for name, build in OPTIMIZERS.items()}
    for loop in loops.values():
        loop(3)
    times = alternating_rounds({name: (lambda loop=loop: loop(args.steps)) for name, loop in loops.items()},
                               args.rounds)
    return {name: statistics.median(t) for name, t in times.items()}


def vq_precision(args: argparse.Namespace) -> tuple[float, float]:
    """(fp32 s/step, autocast_bf16 s/step) of VQ-shapes training through the engine (medians of
    ``--rounds`` alternating rounds of ``--steps`` steps; batch 8 of random 96 px images)."""
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel
    from unified_ar.train.config import TrainConfig
    from unified_ar.train.engine import build_engine

    pixels = torch.rand(8, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = {"pixels": pixels}
    engines = {}
    for precision in ("fp32", "autocast_bf16"):
        torch.manual_seed(0)
        config = TrainConfig(max_steps=10**6, micro_batch_size=8, lr=1e-3, warmup_steps=10, zero_stage=0,
                             precision=precision, progress_bar=False)
        engines[precision] = build_engine(VQModel(VQ_PRESETS["VQ-shapes"]).train(), config)
        engine_loop(engines[precision], batch, 3)
    times = alternating_rounds({name: (lambda e=e: engine_loop(e, batch, args.steps)) for name, e in engines.items()},
                               args.rounds)
    return statistics.median(times["fp32"]), statistics.median(times["autocast_bf16"])


def padding_efficiency(args: argparse.Namespace) -> tuple[dict[int, float], float]:
    """Non-padding fraction of Shapes-world micro-batches (50/50 captions and VQA conversations,
    36 codes per image as in the demo): ({row length: packed}, one sample per row)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from transformers import AutoTokenizer

    from unified_ar.train.collate import CollateConfig, Collator
    from unified_ar.train.data.mixture import Mixture
    from unified_ar.train.data.sampler import MapBatches, PackedBatches
    from unified_ar.train.data.sources import CaptionSource, ConversationSource, ImageCodes, load_rows
    from unified_ar.train.shapes.world import WorldConfig
    from unified_ar.train.shapes.writer import write_world
    from unified_ar.vocab import VocabLayout

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp)
        write_world(world, {"train": args.world_size}, seed=0, config=WorldConfig())
        tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")
        layout = VocabLayout.from_tokenizer(tokenizer, codebook_size=256)
        rng = np.random.default_rng(0)
        images = set(load_rows(world / "captions_train.jsonl")["image"])
        images |= set(load_rows(world / "conversations_train.json")["image"])
        # Code values do not change lengths; random codes stand in for a VQ here.
        codes = ImageCodes(world, table={name: rng.integers(0, 256, 36) for name in sorted(images)})
        mix = Mixture([CaptionSource(world / "captions_train.jsonl", codes),
                       ConversationSource(world / "conversations_train.json", codes)], [0.5, 0.5], seed=0)
        packed = {}
        for length in args.max_length:
            collator = Collator(layout, tokenizer, 36, CollateConfig(max_length=length), seed=0)
            packed[length] = _fill(PackedBatches(mix, collator, rows=args.rows, seed=0), args.batches)
        plain = MapBatches(mix, collator, micro_batch_size=args.batch, seed=0)
        return packed, _fill(plain, args.batches)


def _fill(batches, count: int) -> float:
    real = slots = 0
    for _, (_, batch) in zip(range(count), batches.iter_from(0, 0, 1)):
        real += int(batch["attention_mask"].sum())
        slots += batch["attention_mask"].numel()
    return real / slots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--world-size", type=int, default=512, help="Shapes-world records for the padding figures")
    parser.add_argument("--max-length", type=int, nargs="+", default=[256, 512], help="packed row lengths")
    parser.add_argument("--rows", type=int, default=8, help="rows per packed micro-batch")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--vq-precision", action="store_true", help="time VQ-shapes steps, fp32 vs autocast_bf16")
    parser.add_argument("--optimizers", action="store_true",
                        help="time the plain loop with AdamW foreach, AdamW fused and Muon")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.vq_precision:
        fp32, bf16 = vq_precision(args)
        print(f"VQ-shapes training step, batch 8 x 96 px, engine ZeRO-0, {args.threads} thread(s):")
        print(f"  fp32:          {fp32:.3f} s/step")
        print(f"  autocast_bf16: {bf16:.3f} s/step")
        print(f"  speed-up:      {fp32 / bf16:.2f}x (medians of {args.rounds} alternating rounds)")
        return 0
    if args.optimizers:
        seconds = optimizer_steps(args)
        print(f"plain loop, Llama hidden 128 x 3 layers, vocab {args.vocab}, batch {args.batch} x {args.seq}, "
              f"fp32, {args.threads} thread(s), medians of {args.rounds} alternating rounds:")
        for name, value in seconds.items():
            print(f"  {name:14s} {value * 1e3:6.1f} ms/step  ({value / seconds['adamw_fused']:.2f}x adamw_fused)")
        return 0
    plain, ours, ratio = throughput(args)
    print(f"model: Llama hidden 128 x 3 layers, vocab {args.vocab}; batch {args.batch} x {args.seq}; "
          f"{args.threads} thread(s); fp32 CPU; ZeRO-0, 1 rank")
    print(f"plain PyTorch AdamW loop: {plain:,.0f} tokens/s")
    print(f"engine (DeepSpeed):       {ours:,.0f} tokens/s")
    print(f"ratio engine / plain:     {ratio:.3f} (median over {args.rounds} alternating rounds; target >= 0.9)")
    packed, unpacked = padding_efficiency(args)
    print(f"non-padding fraction, Shapes world 50/50 captions + VQA (36 codes per image), {args.batches} batches:")
    for length, fraction in packed.items():
        print(f"  packed, {args.rows} rows x {length} tokens: {fraction:.3f} (target >= 0.95)")
    print(f"  one sample per row, {args.batch} rows:  {unpacked:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
