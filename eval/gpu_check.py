"""One command for a CUDA machine: the checks that cannot run on the CPU box.

    python -m unified_ar.eval.gpu_check [--preset 1b] [--seq-len 1024] [--batch 8] [--tokens 256]

1. attention kernels give the same logits (bf16 tolerance), on the LLM preset with random
   weights: flash_attention_2 (the flash-attn package, when installed) vs sdpa on a plain and
   a packed batch (varlen from position_ids vs sdpa with our block-diagonal mask); and always
   PyTorch SDPA's own FlashAttention kernel vs its math kernel (plain batch) and its
   memory-efficient kernel vs math (packed batch, where a mask rules FlashAttention out);
2. text-to-image sampling speed (batch, CFG 3) for each KV-cache kind, as a ratio to
   transformers' dynamic cache measured in the same run, and whether greedy codes agree;
3. bf16 training steps (AdamW) of the preset: time per step with SDPA's default kernel choice
   and with the math kernel forced (the ratio is FlashAttention's gain), peak memory;
4. tokenizer throughput at the real sizes (VQ-16 encode/decode, TokLIP-S-256 features), bf16.

A failing check prints its traceback and the others still run; the exit code is then 1.
``--device cpu`` (with ``--preset tiny --vq VQ-shapes``) runs the same code as a smoke test,
skipping what needs CUDA. With the default ``--device cuda`` and no CUDA it exits 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

NO_CUDA = "gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine"


def _tokenizer(workdir: Path):
    from transformers import AutoTokenizer

    from unified_ar.eval.bench_sampling import TEXTS
    from unified_ar.train.shapes.text_tokenizer import train_text_tokenizer

    train_text_tokenizer(TEXTS * 4, workdir / "tokenizer", vocab_size=120)
    return AutoTokenizer.from_pretrained(workdir / "tokenizer")


def _model(tokenizer, preset: str, backend: str, image_size: int, vq: str, device: torch.device):
    from unified_ar.config import from_dict
    from unified_ar.modeling import UnifiedARModel, UnifiedConfig

    cfg = from_dict(UnifiedConfig, {
        "llm": {"preset": preset, "attn_implementation": backend, "dtype": "bfloat16"},
        "vq": {"preset": vq}, "image_size": image_size, "comprehension_features": "vq",
    }, "gpu_check")
    torch.manual_seed(0)
    return UnifiedARModel(cfg, tokenizer, device=device).to(torch.bfloat16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _sdpa_kernel(name: str | None):
    """Context that forces one PyTorch SDPA kernel ("flash", "efficient", "math"); None: default."""
    if name is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH}
    return sdpa_kernel([kernels[name]])


def _batches(model, tokenizer, device: torch.device) -> dict[str, dict]:
    """A plain batch (one sample) and a packed one (two samples in one row)."""
    from unified_ar.sequences import generation_example

    n = model.num_image_tokens
    a = generation_example(model.layout, tokenizer, "a red circle", torch.arange(n) % 200, False).input_ids
    b = generation_example(model.layout, tokenizer, "two blue squares", torch.arange(n) % 100, False).input_ids
    return {
        "plain": {"input_ids": torch.tensor([a], device=device)},
        "packed": {"input_ids": torch.tensor([a + b], device=device),
                   "position_ids": torch.tensor([list(range(len(a))) + list(range(len(b)))], device=device),
                   "segment_ids": torch.tensor([[0] * len(a) + [1] * len(b)], device=device)},
    }


def _compare(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    x, y = x.float(), y.float()
    diff = (x - y).abs().max().item()
    agree = (x.argmax(-1) == y.argmax(-1)).float().mean().item()
    status = "OK" if diff < 0.05 * x.abs().max().item() else "MISMATCH"
    print(f"   {name}: max |dlogit| {diff:.4f} (max |logit| {x.abs().max().item():.2f}), "
          f"argmax agreement {agree:.4f} [{status}]")
    if status != "OK":
        raise AssertionError(f"{name}: logits differ by {diff:.4f}")


def check_flash_attn_package(tokenizer, args, device: torch.device) -> None:
    print("1a. flash_attention_2 (flash-attn package) vs sdpa, tiny preset")
    if device.type != "cuda" or importlib.util.find_spec("flash_attn") is None:
        print("   SKIPPED: needs CUDA and the flash-attn package")
        return
    sdpa = _model(tokenizer, "tiny", "sdpa", 96, "VQ-shapes", device).eval()
    flash = _model(tokenizer, "tiny", "flash_attention_2", 96, "VQ-shapes", device).eval()
    flash.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        for name, batch in _batches(sdpa, tokenizer, device).items():
            _compare(name, sdpa(batch).logits, flash(batch).logits)


def check_sdpa_kernels(model, tokenizer, args, device: torch.device) -> None:
    print(f"1b. PyTorch SDPA kernels, {args.preset} preset (random weights, bf16)")
    if device.type != "cuda":
        print("   SKIPPED: the FlashAttention and memory-efficient SDPA kernels need CUDA")
        return
    batches = _batches(model, tokenizer, device)
    with torch.no_grad():
        for batch_name, kernel in (("plain", "flash"), ("packed", "efficient")):
            batch = batches[batch_name]
            with _sdpa_kernel("math"):
                reference = model(batch).logits
            with _sdpa_kernel(kernel):
                _compare(f"{batch_name} batch, {kernel} vs math", reference, model(batch).logits)


def check_sampling_speed(model, args, device: torch.device) -> None:
    from unified_ar.eval.bench_sampling import CAPTIONS
    from unified_ar.sampling import ImageSamplingConfig, generate_images

    n = model.num_image_tokens
    print(f"2. text-to-image, {args.preset} preset, batch {args.batch}, {n} tokens, CFG 3")
    captions = (CAPTIONS * (args.batch // len(CAPTIONS) + 1))[:args.batch]
    rates, codes = {}, {}
    for cache in ("dynamic", "static", "preallocated"):
        cfg = ImageSamplingConfig(guidance_scale=3.0, cache=cache, decode_images=False, temperature=0.0)
        generate_images(model, captions[:1], cfg=cfg)  # warm-up
        _sync(device)
        start = time.perf_counter()
        codes[cache] = generate_images(model, captions, cfg=cfg).codes
        _sync(device)
        rates[cache] = args.batch * n / (time.perf_counter() - start)
    for cache, rate in rates.items():
        agree = (codes[cache] == codes["dynamic"]).float().mean().item()
        print(f"   {cache:<12} cache: {rate:8.1f} image tokens/s, {rate / rates['dynamic']:.2f}x dynamic; "
              f"greedy codes equal to dynamic's: {agree:.3f}")


def _train_steps(model, args, device: torch.device, kernel: str | None) -> float:
    """Mean seconds per AdamW step over ``args.steps`` steps after one warm-up step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    # random image codes as LLM ids (random text ids could hit the <|image|> placeholder)
    codes = torch.randint(0, model.layout.codebook_size, (1, args.seq_len), device=device)
    ids = model.layout.codes_to_ids(codes)
    batch = {"input_ids": ids, "labels": ids.clone()}
    times = []
    with _sdpa_kernel(kernel):
        for _ in range(args.steps + 1):
            _sync(device)
            start = time.perf_counter()
            loss = model(batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - start)
    del opt
    return sum(times[1:]) / len(times[1:])


def check_train_step(model, args, device: torch.device) -> None:
    total = sum(p.numel() for p in model.parameters())
    print(f"3. bf16 training step, {args.preset} preset ({total / 1e6:,.0f}M params, bf16 weights and AdamW "
          f"states), seq {args.seq_len}, mean of {args.steps} steps after a warm-up")
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    default = _train_steps(model, args, device, None)
    # bf16 weights (2 B), grads (2 B) and AdamW m, v (4 B) per trainable parameter; frozen: weights only
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    states = (8 * trainable + 2 * (total - trainable)) / 2**30
    peak = (f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (weights, grads and AdamW "
            f"states {states:.1f} GiB; the rest is activations and logits)") if device.type == "cuda" else ""
    print(f"   sdpa default kernel: {default:.3f} s/step, {args.seq_len / default:,.0f} tokens/s{peak}")
    if device.type != "cuda":
        print("   math-kernel baseline SKIPPED (CPU)")
        return
    math = _train_steps(model, args, device, "math")
    print(f"   sdpa math kernel:    {math:.3f} s/step; default is {math / default:.2f}x faster")


def check_tokenizer_speed(args, device: torch.device) -> None:
    from unified_ar.eval.bench_tokenizer import OPS, SIZES, _build

    size = "real" if device.type == "cuda" else "shapes"
    vq, toklip, image = SIZES[size]
    print(f"4. tokenizer throughput, {vq} / {toklip} at {image} px, random weights, batch {args.batch}, bf16 autocast")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    for op in OPS:
        torch.manual_seed(0)
        fn, inputs = _build(op, size, args.batch, device)
        with torch.inference_mode(), autocast:
            fn(inputs)
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.tokenizer_iters):
                fn(inputs)
            _sync(device)
        rate = args.batch * args.tokenizer_iters / (time.perf_counter() - start)
        print(f"   {op:<16} {rate:10.1f} images/s")


def _run(name: str, fn, *fn_args) -> bool:
    """Run one check; a failure prints its traceback and the other checks go on."""
    try:
        fn(*fn_args)
    except Exception:  # noqa: BLE001 - reported in full, and the exit code says it failed
        print(f"   FAILED: {name}")
        traceback.print_exc(file=sys.stdout)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="1b", help="LLM preset (1b: TinyLlama shape)")
    p.add_argument("--vq", default="VQ-16", help="VQ preset (downsample factor 16)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per kernel choice")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256, help="image tokens per image (a square)")
    p.add_argument("--tokenizer-iters", type=int, default=10)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, flash-attn installed: "
          f"{importlib.util.find_spec('flash_attn') is not None}")
    from unified_ar.tokenizer.vq import VQ_PRESETS

    image_size = VQ_PRESETS[args.vq].downsample_factor * int(round(args.tokens ** 0.5))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
        ok &= _run("flash-attn package", check_flash_attn_package, tokenizer, args, device)
        model = _model(tokenizer, args.preset, "sdpa", image_size, args.vq, device).eval()
        ok &= _run("SDPA kernels", check_sdpa_kernels, model, tokenizer, args, device)
        ok &= _run("sampling speed", check_sampling_speed, model, args, device)
        if not args.skip_train:
            ok &= _run("training step", check_train_step, model, args, device)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        ok &= _run("tokenizer throughput", check_tokenizer_speed, args, device)
    print("gpu_check: all checks passed" if ok else "gpu_check: some checks FAILED (tracebacks above)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
