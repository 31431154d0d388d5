"""``python -m unified_ar.eval.bench_tokenizer``: throughput and peak memory of the tokenizer models.

Measures images/s of VQ encode (pixels -> codes), VQ decode (codes -> pixels) and
TokLIP features (codes -> per-token features + pooled embedding, the trunk only:
the text tower plays no part in feature extraction) with random weights on the
CPU, at the Shapes presets and at the real sizes (VQ-16 / TokLIP-S-256).

Each measurement runs in its own child process so that its peak memory is its
own: "peak MiB" is the child's ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at
the end minus its value right after the model and inputs were built, i.e. the
extra resident memory the forward passes needed (weights excluded).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

SIZES = {
    # name: (VQ preset, TokLIP preset, image size)
    "shapes": ("VQ-shapes", "TokLIP-shapes", 96),
    "real": ("VQ-16", "TokLIP-S-256", 256),
}
OPS = ("vq_encode", "vq_decode", "toklip_features")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _build(op: str, size: str, batch: int, device: str | torch.device = "cpu"):
    """The callable to time and its input, with random weights, on ``device``."""
    from unified_ar.tokenizer.toklip import TokLIPTrunk, toklip_config
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel

    vq_name, toklip_name, image = SIZES[size]
    grid = image // VQ_PRESETS[vq_name].downsample_factor
    with torch.device(device):
        codes = torch.randint(0, VQ_PRESETS[vq_name].codebook_size, (batch, grid, grid))
        if op == "vq_encode":
            return VQModel(VQ_PRESETS[vq_name]).eval().encode, torch.rand(batch, 3, image, image) * 2 - 1
        if op == "vq_decode":
            return VQModel(VQ_PRESETS[vq_name]).eval().decode, codes
        trunk = TokLIPTrunk(toklip_config(toklip_name)).eval()
    return (lambda c: trunk.attn_pool(trunk(c.flatten(1)))), codes


def measure(op: str, size: str, batch: int, iters: int, warmup: int, threads: int) -> dict:
    """Run one measurement in this process; returns images/s and peak extra memory."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fn, inputs = _build(op, size, batch)
    base = _rss_mib()
    with torch.inference_mode():
        for _ in range(warmup):
            fn(inputs)
        start = time.perf_counter()
        for _ in range(iters):
            fn(inputs)
        elapsed = time.perf_counter() - start
    return {"op": op, "size": size, "batch": batch, "iters": iters, "threads": threads,
            "images_per_s": batch * iters / elapsed, "peak_mib": _rss_mib() - base}


def _child(op: str, size: str, args) -> dict:
    cmd = [sys.executable, "-m", "unified_ar.eval.bench_tokenizer", "--one", op, size, "--batch", str(args.batch),
           "--threads", str(args.threads)]
    iters, warmup = (args.iters, args.warmup) if size == "shapes" else (args.real_iters, args.real_warmup)
    cmd += ["--iters", str(iters), "--warmup", str(warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench_tokenizer child {op} {size} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="timed batches at the Shapes size")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--real-iters", type=int, default=1, help="timed batches at the real size")
    parser.add_argument("--real-warmup", type=int, default=0)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--one", nargs=2, metavar=("OP", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        op, size = args.one
        print(json.dumps(measure(op, size, args.batch, args.iters, args.warmup, args.threads)))
        return 0
    rows = [_child(op, size, args) for size in args.sizes for op in OPS]
    print(f"CPU, random weights, batch {args.batch}, {args.threads} threads; peak MiB = ru_maxrss delta in a "
          "fresh process (forward-pass memory beyond weights and inputs)")
    print(f"{'size':<8} {'models':<28} {'op':<16} {'images/s':>10} {'peak MiB':>9}")
    for row in rows:
        vq, toklip, image = SIZES[row["size"]]
        models = f"{vq if row['op'].startswith('vq') else toklip} @{image}px"
        print(f"{row['size']:<8} {models:<28} {row['op']:<16} {row['images_per_s']:>10.2f} {row['peak_mib']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
