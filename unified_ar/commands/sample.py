"""``unified-ar sample``: text-to-image for a file of prompts; PNGs, a grid and a JSON record."""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import get_args

from PIL import Image

from unified_ar.devices import DEVICE_HELP
from unified_ar.generation_config import MODEL_DEFAULT, flags_given


def read_prompts(path: str | Path) -> list[str]:
    """JSONL lines with a "prompt" key, or plain text lines (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompts file not found")
    prompts = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(record.get("prompt"), str):
                raise ValueError(f"{path}:{n}: a JSON line needs a string \"prompt\"")
            prompts.append(record["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def make_grid(images: list[Image.Image], columns: int | None = None, gap: int = 2) -> Image.Image:
    """Tile equally sized images into one picture, row-major."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    grid = Image.new("RGB", (columns * (w + gap) - gap, rows * (h + gap) - gap), (40, 40, 40))
    for i, img in enumerate(images):
        grid.paste(img, ((i % columns) * (w + gap), (i // columns) * (h + gap)))
    return grid


def build_parser() -> argparse.ArgumentParser:
    from unified_ar.sampling import CacheKind  # lazy: --help stays fast

    p = argparse.ArgumentParser(prog="unified-ar sample", description=__doc__)
    p.add_argument("--model", required=True, help="a save_pretrained directory")
    p.add_argument("--prompts", required=True, help="JSONL with \"prompt\" or plain text lines")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i")
    # sampling flags left out take the model's generation_config.json (MODEL_DEFAULT)
    p.add_argument("--guidance-scale", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--no-cfg", action="store_true", help="conditional rows only")
    p.add_argument("--guidance-schedule", choices=["constant", "linear", "cosine"], default=None, help=MODEL_DEFAULT)
    p.add_argument("--temperature", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--top-k", type=int, default=None, help=MODEL_DEFAULT)
    p.add_argument("--top-p", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--max-batch", type=int, default=8, help="prompts per forward")
    p.add_argument("--memory-limit-mb", type=float, default=0.0, help="KV-cache budget per micro-batch")
    p.add_argument("--cache", choices=get_args(CacheKind), default="preallocated",
                   help="KV cache (docs/MODEL.md; none = recompute every step)")
    p.add_argument("--attn", choices=["eager", "sdpa", "flash_attention_2"], default=None)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    from unified_ar.devices import resolve_device
    from unified_ar.modeling import UnifiedARModel
    from unified_ar.sampling import ImageSamplingConfig, generate_images

    args = build_parser().parse_args(argv)
    overrides = {"attn_implementation": args.attn} if args.attn else {}
    try:
        prompts = read_prompts(args.prompts)
        model = UnifiedARModel.from_pretrained(args.model, device=resolve_device(args.device), **overrides)
    except (OSError, ValueError) as error:  # a missing / malformed prompts file or model folder
        print(f"unified-ar sample: {error}", file=sys.stderr)
        return 2
    settings = flags_given(guidance_scale=args.guidance_scale, guidance_schedule=args.guidance_schedule,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.no_cfg:
        settings["guidance_scale"] = None
    cfg = ImageSamplingConfig.for_model(model, **settings, max_batch=args.max_batch,
                                        memory_limit_mb=args.memory_limit_mb, cache=args.cache)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = generate_images(model, prompts, seeds=args.seed, cfg=cfg)
    files = []
    for i, img in enumerate(samples.images):
        files.append(f"{i:05d}.png")
        img.save(out / files[-1])
    make_grid(samples.images).save(out / "grid.png")
    record = {
        "model": str(args.model), "settings": asdict(cfg), "torch_threads": torch.get_num_threads(),
        "samples": [{"prompt": p, "seed": s, "file": f, "codes": c.flatten().tolist()}
                    for p, s, f, c in zip(prompts, samples.seeds, files, samples.codes)],
    }
    (out / "samples.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {len(files)} images, grid.png and samples.json to {out}")
    return 0
