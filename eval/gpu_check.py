"""One command for a CUDA machine: the checks that cannot run on the CPU box.

    python -m unified_ar.eval.gpu_check [--skip-train] [--batch 8] [--tokens 256]

1. flash_attention_2 vs sdpa: the same weights give the same logits (bf16 tolerance), on a
   plain batch and on a packed batch (FlashAttention varlen from position_ids vs sdpa with our
   block-diagonal mask);
2. one bf16 training step (AdamW) of the 1B-class config, random init: time and peak memory;
3. text-to-image sampling speed (batch, CFG on) of the 1B-class LLM: image tokens/s.

Prints the figures; exits 2 with a clear message when there is no CUDA device.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

NO_CUDA = "gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine"


def _tokenizer(workdir: Path):
    from transformers import AutoTokenizer

    from unified_ar.eval.bench_sampling import TEXTS
    from unified_ar.train.shapes.text_tokenizer import train_text_tokenizer

    train_text_tokenizer(TEXTS * 4, workdir / "tokenizer", vocab_size=120)
    return AutoTokenizer.from_pretrained(workdir / "tokenizer")


def _model(tokenizer, preset: str, backend: str, image_size: int, vq: str):
    from unified_ar.config import from_dict
    from unified_ar.modeling import UnifiedARModel, UnifiedConfig

    cfg = from_dict(UnifiedConfig, {
        "llm": {"preset": preset, "attn_implementation": backend, "dtype": "bfloat16"},
        "vq": {"preset": vq}, "image_size": image_size, "comprehension_features": "vq",
    }, "gpu_check")
    torch.manual_seed(0)
    return UnifiedARModel(cfg, tokenizer, device="cuda").to(torch.bfloat16)


def check_flash_vs_sdpa(tokenizer) -> None:
    from unified_ar.sequences import generation_example

    if importlib.util.find_spec("flash_attn") is None:
        print("1. flash_attention_2 vs sdpa: SKIPPED (flash-attn not installed)")
        return
    sdpa = _model(tokenizer, "tiny", "sdpa", 96, "VQ-shapes").eval()
    flash = _model(tokenizer, "tiny", "flash_attention_2", 96, "VQ-shapes").eval()
    flash.load_state_dict(sdpa.state_dict())
    n = sdpa.num_image_tokens
    a = generation_example(sdpa.layout, tokenizer, "a red circle", torch.arange(n) % 200, False).input_ids
    b = generation_example(sdpa.layout, tokenizer, "two blue squares", torch.arange(n) % 100, False).input_ids
    plain = {"input_ids": torch.tensor([a], device="cuda")}
    packed = {"input_ids": torch.tensor([a + b], device="cuda"),
              "position_ids": torch.tensor([list(range(len(a))) + list(range(len(b)))], device="cuda"),
              "segment_ids": torch.tensor([[0] * len(a) + [1] * len(b)], device="cuda")}
    with torch.no_grad():
        for name, batch in (("plain", plain), ("packed", packed)):
            x, y = sdpa(batch).logits.float(), flash(batch).logits.float()
            diff = (x - y).abs().max().item()
            agree = (x.argmax(-1) == y.argmax(-1)).float().mean().item()
            status = "OK" if diff < 0.05 * x.abs().max().item() else "MISMATCH"
            print(f"1. flash_attention_2 vs sdpa ({name}): max |dlogit| {diff:.4f}, argmax agreement {agree:.4f} "
                  f"[{status}]")


def check_train_step(tokenizer, seq_len: int, backend: str) -> None:
    model = _model(tokenizer, "1b", backend, 256, "VQ-16").train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, model.layout.vocab_size, (1, seq_len), device="cuda")
    batch = {"input_ids": ids, "labels": ids.clone()}
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model(batch)
    out.loss.backward()
    opt.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30
    total = sum(p.numel() for p in model.parameters())
    print(f"2. bf16 train step, 1B-class ({total / 1e9:.2f}B params, seq {seq_len}, {backend}): "
          f"{seconds:.2f} s, loss {out.loss.item():.3f}, peak memory {peak:.1f} GiB "
          f"(bf16 AdamW states here; compare unified-ar model-info --config configs/model/1b.yaml)")
    del model, opt, out


def check_sampling_speed(tokenizer, batch: int, tokens: int, backend: str) -> None:
    from unified_ar.eval.bench_sampling import CAPTIONS
    from unified_ar.sampling import ImageSamplingConfig, generate_images

    grid = int(round(tokens ** 0.5))
    model = _model(tokenizer, "1b", backend, 16 * grid, "VQ-16").eval()
    captions = (CAPTIONS * (batch // len(CAPTIONS) + 1))[:batch]
    for cache in ("preallocated", "static", "dynamic"):
        cfg = ImageSamplingConfig(guidance_scale=3.0, cache=cache, decode_images=False)
        generate_images(model, captions[:1], cfg=cfg)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        generate_images(model, captions, cfg=cfg)
        torch.cuda.synchronize()
        rate = batch * model.num_image_tokens / (time.perf_counter() - start)
        print(f"3. text-to-image, 1B-class, batch {batch}, {model.num_image_tokens} tokens, CFG 3, {cache} cache: "
              f"{rate:.1f} image tokens/s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    backend = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, attention for 1B: {backend}")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
        check_flash_vs_sdpa(tokenizer)
        if not args.skip_train:
            check_train_step(tokenizer, args.seq_len, backend)
            torch.cuda.empty_cache()
        check_sampling_speed(tokenizer, args.batch, args.tokens, backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
