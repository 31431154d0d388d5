"""Text-to-image sampling speed: image tokens/s and LLM forwards per image for ours (the default:
the compiled decode step over the preallocated KV cache (the CUDA default); the eager step (the
CPU default); speculative Jacobi decoding; the eager transformers model with the preallocated, static and dynamic caches), the same
LLM through ``transformers`` ``generate()`` with classifier-free guidance, and ours recomputing the
whole sequence every step (no KV cache). Ratios come from one run. On a GPU it also reports the
fraction of the weight-reading limit: the time to read the LLM's weights once per forward at the
device's memory bandwidth, over the time measured.

    python -m unified_ar.eval.bench_sampling --presets tiny 100m --tokens 256 --batch 8 --rounds 3

``generate()`` is given ``guidance_scale`` and ``negative_prompt_ids`` (transformers'
``UnbatchedClassifierFreeGuidanceLogitsProcessor``: the unconditional rows run as a second
forward with their own cache) and a logits processor that allows only image ids, so it
samples what ours samples. The no-cache baseline at 256 tokens and ~100M parameters would
take most of an hour on 2 cores; ``--nocache-stride k`` times every k-th decoding step and
integrates (a step's cost depends only on the sequence length), which the output marks.
``--rounds r`` times every method r times, alternating the order between rounds (ABBA), and
reports each method's median, so that drift of a shared machine hits all methods alike.
A warm-up call per method (not timed) compiles the decode step first.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unified_ar.compiled_decode import count_forwards
from unified_ar.eval.timing import alternating_rounds
from unified_ar.sampling import (
    ImageSamplingConfig, decode_one_token, generate_images, left_pad, prefill,
)
from unified_ar.sequences import generation_prompt

CAPTIONS = ["a red circle at the top left", "a blue square in the center", "two green triangles at the bottom",
            "a large yellow square on the right", "a small magenta triangle", "three white circles",
            "a cyan square and a red triangle", "one blue circle at the bottom right"]
TEXTS = CAPTIONS + ["what color is the circle?", "how many shapes are there?", "yes", "no", "is there a square?"]


@dataclass
class Row:
    preset: str
    tokens: int
    method: str
    seconds: float
    note: str = ""
    forwards: int = 0  # LLM forwards of one call (one batch: every forward advances all its images)
    weight_fraction: float | None = None  # GPU: weight-reading time / measured time

    def rate(self, batch: int) -> float:
        return batch * self.tokens / self.seconds


def build(preset: str, grid: int, workdir: Path):
    """A random-init unified model with an LLM preset and a ``grid x grid`` image (VQ-shapes, 16x)."""
    from transformers import AutoTokenizer

    from unified_ar.config import from_dict
    from unified_ar.modeling import UnifiedARModel, UnifiedConfig
    from unified_ar.train.shapes.text_tokenizer import train_text_tokenizer

    tok_dir = workdir / "tokenizer"
    if not tok_dir.is_dir():
        train_text_tokenizer(TEXTS * 4, tok_dir, vocab_size=120)
    cfg = from_dict(UnifiedConfig, {
        "llm": {"preset": preset, "attn_implementation": "sdpa"},
        "vq": {"preset": "VQ-shapes"}, "image_size": 16 * grid,
        # the benchmark times the LLM; the TokLIP path is off so that generate() sees the same model
        "comprehension_features": "vq", "semantic_gen_input": False,
    }, "bench_sampling")
    torch.manual_seed(0)
    return UnifiedARModel(cfg, AutoTokenizer.from_pretrained(tok_dir)).eval()


def time_ours(model, batch: int, cache: str, **settings) -> float:
    cfg = ImageSamplingConfig(guidance_scale=3.0, temperature=1.0, top_k=0, cache=cache, decode_images=False,
                              **settings)
    _sync(model)
    start = time.perf_counter()
    generate_images(model, CAPTIONS[:batch], seeds=0, cfg=cfg)
    _sync(model)
    return time.perf_counter() - start


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def memory_bandwidth(device: torch.device, override_gbs: float | None) -> float | None:
    """Bytes/s of the device's memory: ``override_gbs``, else (CUDA) bus width x memory clock x 2
    (double data rate) from the device properties; None on a CPU without an override."""
    if override_gbs:
        return override_gbs * 1e9
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    return 2 * props.memory_bus_width / 8 * props.memory_clock_rate * 1e3


def weight_bytes(model) -> int:
    """Bytes of LLM weights one forward reads (every parameter but the input embedding table)."""
    embedding = model.llm.get_input_embeddings().weight
    return sum(p.numel() * p.element_size() for p in model.llm.parameters() if p is not embedding)


def _cfg_rows(model, batch: int):
    layout, tok = model.layout, model.tokenizer
    cond = [generation_prompt(layout, tok, c) + [layout.image_start_id] for c in CAPTIONS[:batch]]
    uncond = [generation_prompt(layout, tok, None) + [layout.image_start_id]] * batch
    return cond, uncond


@torch.inference_mode()
def time_generate(model, batch: int) -> float:
    """transformers ``generate()`` with CFG and an image-ids-only logits processor."""
    from transformers import LogitsProcessor, LogitsProcessorList

    start_id, stop_id = model.layout.image_id_range()

    class ImageIdsOnly(LogitsProcessor):
        def __call__(self, input_ids, scores):
            out = torch.full_like(scores, float("-inf"))
            out[:, start_id:stop_id] = scores[:, start_id:stop_id]
            return out

    cond, uncond = _cfg_rows(model, batch)
    ids, mask = left_pad(cond, model.layout.pad_id, model.device)
    neg, neg_mask = left_pad(uncond, model.layout.pad_id, model.device)
    n = model.num_image_tokens
    _sync(model)
    start = time.perf_counter()
    out = model.llm.generate(
        input_ids=ids, attention_mask=mask, negative_prompt_ids=neg, negative_prompt_attention_mask=neg_mask,
        guidance_scale=3.0, do_sample=True, top_k=0, max_new_tokens=n, min_new_tokens=n,
        logits_processor=LogitsProcessorList([ImageIdsOnly()]), pad_token_id=model.layout.pad_id,
        eos_token_id=None,
    )
    _sync(model)
    seconds = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + n and bool(model.layout.is_image_id(out[:, ids.shape[1]:]).all())
    return seconds


@torch.inference_mode()
def time_nocache(model, batch: int, stride: int) -> float:
    """Ours without a KV cache; with ``stride > 1`` every stride-th step is timed and integrated."""
    if stride == 1:
        return time_ours(model, batch, "none")
    cond, uncond = _cfg_rows(model, batch)
    ids, mask = left_pad(cond + uncond, model.layout.pad_id, model.device)
    n = model.num_image_tokens
    start = time.perf_counter()
    logits, state = prefill(model, model.embed(ids), mask, "none", n)
    total = time.perf_counter() - start
    step_ids = torch.full((2 * batch, 1), model.layout.code_offset, device=model.device)
    timed = {}
    for t in range(0, n - 1, stride):
        # a state holding t generated tokens, then one timed step
        pad = model.gen_embeds(step_ids, None, 0).expand(-1, t, -1) if t else None
        s = state if t == 0 else type(state)(None, state.attention_mask, state.position_ids + t,
                                               state.length + t, False, torch.cat([state.embeds, pad], 1))
        begin = time.perf_counter()
        decode_one_token(model, model.gen_embeds(step_ids, None, t), s)
        timed[t] = time.perf_counter() - begin
    # each untimed step costs as much as the timed step at or before it (cost grows with t: a lower bound)
    total += sum(timed[(t // stride) * stride] for t in range(n - 1))
    return total


OURS = "ours, compiled step"
JACOBI = "ours, speculative Jacobi"
GENERATE = "generate() + CFG"
NOCACHE = "ours, no KV cache"


def methods_for(model, batch: int, stride: int, window: int) -> dict:
    return {OURS: lambda: time_ours(model, batch, "preallocated", compile=True),
            JACOBI: lambda: time_ours(model, batch, "preallocated", sampler="jacobi", jacobi_window=window,
                                      compile=True),
            "ours, eager step (CPU default)": lambda: time_ours(model, batch, "preallocated", compile=False),
            "ours, eager, static cache": lambda: time_ours(model, batch, "static"),
            "ours, eager, dynamic cache": lambda: time_ours(model, batch, "dynamic"),
            GENERATE: lambda: time_generate(model, batch),
            NOCACHE: lambda: time_nocache(model, batch, stride)}


def count_call(model, fn) -> int:
    """LLM forwards of one call of ``fn`` (also its warm-up: compiles the decode step)."""
    with count_forwards(model) as counter:
        fn()
    return counter[0]


def run(presets: list[str], token_counts: list[int], batch: int, stride_100m: int, threads: int,
        rounds: int = 1, only: list[str] | None = None, window: int = 16, bandwidth_gbs: float | None = None,
        device: str = "cpu") -> list[Row]:
    torch.set_num_threads(threads)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            for tokens in token_counts:
                grid = int(round(tokens ** 0.5))
                model = build(preset, grid, Path(tmp)).to(device)
                stride = stride_100m if (preset != "tiny" and tokens > 64) else 1
                methods = methods_for(model, batch, stride, window)
                methods = {k: v for k, v in methods.items() if not only or k in only}
                forwards = {k: count_call(model, v) if k != NOCACHE else 0 for k, v in methods.items()}
                bandwidth = memory_bandwidth(model.device, bandwidth_gbs)
                for method, seconds in alternating_rounds(methods, rounds).items():
                    note = f"every {stride}th step timed" if method == NOCACHE and stride > 1 else ""
                    median = statistics.median(seconds)
                    fraction = (forwards[method] * weight_bytes(model) / bandwidth / median
                                if bandwidth and forwards[method] else None)
                    rows.append(Row(preset, tokens, method, median, note, forwards[method], fraction))
                    extra = f", {fraction:.1%} of the weight-reading limit" if fraction is not None else ""
                    print(f"{preset:>5} {tokens:>4} {method:<34} {rows[-1].rate(batch):9.1f} image tok/s, "
                          f"{forwards[method]} forwards{extra} {note} "
                          f"(rounds: {', '.join(f'{batch * tokens / t:.1f}' for t in seconds)})", flush=True)
    return rows


def report(rows: list[Row], batch: int) -> str:
    """One table row per (preset, tokens, method): tok/s, forwards, ratio to generate() + CFG."""
    gpu = any(r.weight_fraction is not None for r in rows)
    head = "| LLM preset | image tokens | method | image tok/s | LLM forwards per image | x generate() + CFG |"
    lines = [head + (" weight-reading limit |" if gpu else ""), "|---" * (6 + gpu) + "|"]
    for r in rows:
        gen = next((g for g in rows if (g.preset, g.tokens, g.method) == (r.preset, r.tokens, GENERATE)), None)
        ratio = f"{gen.seconds / r.seconds:.2f}x" if gen else "-"
        mark = "*" if r.note else ""
        line = (f"| {r.preset} | {r.tokens} | {r.method} | {r.rate(batch):.1f}{mark} | {r.forwards or '-'} "
                f"| {ratio}{mark} |")
        if gpu:
            line += f" {r.weight_fraction:.1%} |" if r.weight_fraction is not None else " - |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "100m"])
    p.add_argument("--tokens", nargs="+", type=int, default=[64, 256])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--nocache-stride", type=int, default=16, help="for non-tiny presets above 64 tokens")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="times per method, alternating order; medians reported")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods (names as printed)")
    p.add_argument("--jacobi-window", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="the device's memory bandwidth (default on CUDA: from its properties)")
    args = p.parse_args(argv)
    for t in args.tokens:
        if int(round(t ** 0.5)) ** 2 != t:
            raise SystemExit(f"--tokens {t}: must be a square (an h x w grid)")
    known = list(methods_for(None, 0, 1, 2))
    for m in args.methods or []:
        if m not in known:
            p.error(f"--methods: unknown method {m!r} (known: {'; '.join(known)})")
    rows = run(args.presets, args.tokens, args.batch, args.nocache_stride, args.threads, args.rounds,
               args.methods, args.jacobi_window, args.bandwidth_gbs, args.device)
    print(f"\nbatch {args.batch}, CFG 3.0, torch threads {args.threads}, {args.rounds} round(s), {torch.__version__}")
    print(report(rows, args.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
