"""``unified-ar sample``: text-to-image for a file of prompts, streamed to disk, resumable, sharded.

``--prompts FILE`` (JSONL with "prompt", or plain text lines): prompt ``i`` is drawn with seed
``--seed + i`` into ``OUT/{i:05d}.png`` (the PNG carries its prompt, seed and codes); the rank that
completes the set writes ``OUT/grid.png`` (the first 64 images) and ``OUT/samples.json`` (the record,
rebuilt from the PNGs).

``--geneval-metadata FILE`` / ``--dpg-prompts DIR``: the folders GenEval's and DPG-Bench's scorers read,
``OUT/geneval/{i:05d}/samples/{k:05d}.png`` (4 samples a prompt) / ``OUT/dpg/{stem}.png`` (a 2x2 grid),
sample ``k`` of prompt ``i`` drawn with seed ``--seed + 1000 i + k`` (as ``unified-ar eval-t2i``).

Every image is written (atomically) as its micro-batch finishes. A rerun into the same ``--out``
draws only what is missing; a folder sampled with other settings (weights, guidance, seed, ...) is
an error naming what differs. Under torchrun (``RANK`` / ``WORLD_SIZE``) prompt ``i`` is drawn by
rank ``i % WORLD_SIZE``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence, get_args

import numpy as np
from PIL import Image

from unified_ar.devices import DEVICE_HELP
from unified_ar.eval.t2i import (
    SETTINGS_NAME, check_sampling_settings, dpg_resolution, geneval_sample, lazy_image_fn, read_dpg_prompts,
    read_geneval_metadata, read_utf8, sampling_settings, save_png, write_dpg, write_geneval,
)
from unified_ar.files import TMP_SUFFIX
from unified_ar.generation_config import MODEL_DEFAULT, GenerationConfig, flags_given

# draw(prompts, seeds) -> (RGB images, flat codes per image)
Draw = Callable[[list[str], list[int]], tuple[list[Image.Image], list[list[int]]]]
RECORD_KEY = "unified_ar"  # the PNG text chunk holding {"prompt", "seed", "codes"}
GRID_IMAGES = 64  # grid.png tiles the first ones: a picture of 10,000 would not open
GENEVAL_SAMPLES = 4


def read_prompts(path: str | Path) -> list[str]:
    """JSONL lines with a "prompt" key, or plain text lines (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompts file not found")
    prompts = []
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
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


# -- plain prompts: one PNG a prompt, the record rebuilt from the PNGs --------------------------
def image_file(i: int) -> str:
    return f"{i:05d}.png"


def read_record(path: Path) -> dict:
    """The prompt, seed and codes a PNG of ours carries."""
    with Image.open(path) as img:
        text = getattr(img, "text", {}).get(RECORD_KEY)
    try:
        record = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not {"prompt", "seed", "codes"} <= record.keys():
        raise ValueError(f"{path}: not drawn by unified-ar sample (no {RECORD_KEY!r} record in the PNG); "
                         "use another --out")
    return record


def check_drawn(path: Path, prompt: str, seed: int, source: str) -> dict:
    """The record of an existing PNG, which must be of ``prompt`` drawn with ``seed``."""
    record = read_record(path)
    if (record["prompt"], record["seed"]) != (prompt, seed):
        raise ValueError(f"{path} was drawn for {record['prompt']!r} (seed {record['seed']}), but {source} "
                         f"now asks {prompt!r} (seed {seed}); use another --out")
    return record


def sample_shard(draw: Draw, prompts: Sequence[str], out: str | Path, seed: int = 0, batch_size: int = 8,
                 rank: int = 0, world_size: int = 1, source: str = "the prompts file", progress: bool = True) -> int:
    """Draw this rank's prompts (``i % world_size == rank``) whose PNG is missing, writing each
    micro-batch as it finishes; returns how many it drew."""
    from tqdm import tqdm

    out = Path(out)
    mine = range(rank, len(prompts), world_size)
    for i in mine:
        if (out / image_file(i)).is_file():
            check_drawn(out / image_file(i), prompts[i], seed + i, f"{source} (prompt {i}, blank lines not counted)")
        for stale in out.glob(f".{image_file(i)}.*{TMP_SUFFIX}"):
            stale.unlink()  # a killed run's half-written image
    todo = [i for i in mine if not (out / image_file(i)).is_file()]
    batch_size = batch_size or max(1, len(todo))  # 0: all at once
    desc = "sample" if world_size == 1 else f"sample rank {rank}/{world_size}"
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            images, codes = draw([prompts[i] for i in batch], [seed + i for i in batch])
            if len(images) != len(batch) or len(codes) != len(batch):
                raise RuntimeError(f"the sampler returned {len(images)} images for {len(batch)} prompts")
            for i, img, c in zip(batch, images, codes):
                record = {"prompt": prompts[i], "seed": seed + i, "codes": [int(v) for v in c]}
                save_png(out / image_file(i), np.asarray(img.convert("RGB")), {RECORD_KEY: json.dumps(record)})
            bar.update(len(batch))
    return len(todo)


def finalize(prompts: Sequence[str], out: str | Path, seed: int, header: dict,
             source: str = "the prompts file") -> dict | None:
    """When every prompt has its PNG: ``grid.png`` and ``samples.json`` (``header`` + one entry a
    prompt, from the PNGs). None, with a line on stderr, while some are missing (other ranks)."""
    from unified_ar.files import write_atomic

    out = Path(out)
    missing = [i for i in range(len(prompts)) if not (out / image_file(i)).is_file()]
    if missing:
        print(f"unified-ar sample: {len(missing)} of {len(prompts)} images still missing (other ranks running?); "
              "the rank that finishes last writes grid.png and samples.json", file=sys.stderr)
        return None
    entries = []
    for i, prompt in enumerate(prompts):
        record = check_drawn(out / image_file(i), prompt, seed + i, f"{source} (prompt {i}, blank lines not counted)")
        entries.append({"prompt": prompt, "seed": seed + i, "file": image_file(i), "codes": record["codes"]})
    tiles = [Image.open(out / image_file(i)).convert("RGB") for i in range(min(len(prompts), GRID_IMAGES))]
    save_png(out / "grid.png", np.asarray(make_grid(tiles)))
    record = {**header, "samples": entries}
    write_atomic(out / "samples.json", json.dumps(record, indent=1) + "\n")  # ranks may finish together
    return record


# -- the model side -----------------------------------------------------------------------------
def image_config(args: argparse.Namespace):
    """The model folder's image settings (generation_config.json), then the flags given."""
    from unified_ar.sampling import ImageSamplingConfig

    settings = flags_given(guidance_scale=args.guidance_scale, guidance_schedule=args.guidance_schedule,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.no_cfg:
        settings["guidance_scale"] = None
    image = asdict(GenerationConfig.load(args.model).image)
    return ImageSamplingConfig(**{**image, **settings, "max_batch": args.max_batch,
                                  "memory_limit_mb": args.memory_limit_mb, "cache": args.cache})


def settings_record(model_dir: str, cfg, seed: int) -> dict:
    """What decides the images: the weights (eval-t2i's record), guidance, seed, the sampler's knobs."""
    return {**sampling_settings(model_dir, cfg.guidance_scale, seed), "guidance_schedule": cfg.guidance_schedule,
            "temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p}


def load_draw(model_dir: str, device, cfg, attn: str | None) -> Draw:
    """``draw(prompts, seeds)`` with the model loaded now."""
    from unified_ar.modeling import UnifiedARModel
    from unified_ar.sampling import generate_images

    overrides = {"attn_implementation": attn} if attn else {}
    model = UnifiedARModel.from_pretrained(model_dir, device=device, **overrides)

    def draw(prompts: list[str], seeds: list[int]) -> tuple[list[Image.Image], list[list[int]]]:
        samples = generate_images(model, prompts, seeds=seeds, cfg=cfg)
        return samples.images, [c.flatten().tolist() for c in samples.codes]

    return draw


def image_fn_of(draw: Draw, seed: int) -> Callable:
    """eval-t2i's ``image_fn(prompts, indices)``: index ``v`` drawn with seed ``seed + v``."""
    def image_fn(prompts: list[str], indices: list[int]) -> list[np.ndarray]:
        images, _ = draw(prompts, [seed + v for v in indices])
        return [np.asarray(img.convert("RGB")) for img in images]

    return image_fn


# -- the command ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from unified_ar.sampling import CacheKind  # lazy: --help stays fast

    p = argparse.ArgumentParser(prog="unified-ar sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a save_pretrained directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help="JSONL with \"prompt\" or plain text lines")
    source.add_argument("--geneval-metadata", metavar="FILE",
                        help=f"GenEval's evaluation_metadata.jsonl -> OUT/geneval/ "
                             f"({GENEVAL_SAMPLES} samples a prompt)")
    source.add_argument("--dpg-prompts", metavar="DIR", help="DPG-Bench's prompts/ folder of *.txt -> OUT/dpg/")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0,
                   help="prompt i uses seed + i (GenEval / DPG: sample k of prompt i uses seed + 1000 i + k)")
    # sampling flags left out take the model's generation_config.json (MODEL_DEFAULT)
    p.add_argument("--guidance-scale", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--no-cfg", action="store_true", help="conditional rows only")
    p.add_argument("--guidance-schedule", choices=["constant", "linear", "cosine"], default=None, help=MODEL_DEFAULT)
    p.add_argument("--temperature", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--top-k", type=int, default=None, help=MODEL_DEFAULT)
    p.add_argument("--top-p", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--max-batch", type=int, default=8, help="prompts per forward (and per write)")
    p.add_argument("--memory-limit-mb", type=float, default=0.0, help="KV-cache budget per micro-batch")
    p.add_argument("--cache", choices=get_args(CacheKind), default="preallocated",
                   help="KV cache (docs/MODEL.md; none = recompute every step)")
    p.add_argument("--attn", choices=["eager", "sdpa", "flash_attention_2"], default=None)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    return p


def sample_prompts(args: argparse.Namespace, draw: Draw, cfg, rank: int, world: int) -> None:
    import torch

    prompts = read_prompts(args.prompts)
    out = Path(args.out)
    check_sampling_settings(out, settings_record(args.model, cfg, args.seed))
    drawn = sample_shard(draw, prompts, out, args.seed, args.max_batch, rank, world, source=args.prompts)
    header = {"model": str(args.model), "settings": asdict(cfg), "torch_threads": torch.get_num_threads()}
    done = finalize(prompts, out, args.seed, header, source=args.prompts)
    tail = f", grid.png and samples.json ({len(prompts)} prompts)" if done else ""
    print(f"drew {drawn} images into {out}{tail}")


def sample_benchmark(args: argparse.Namespace, draw: Draw, cfg, rank: int, world: int) -> None:
    """GenEval / DPG-Bench: this rank's prompts through eval-t2i's writers; the scorer's command
    once the folder is complete."""
    geneval = bool(args.geneval_metadata)
    prompts = read_geneval_metadata(args.geneval_metadata) if geneval else read_dpg_prompts(args.dpg_prompts)
    out = Path(args.out)
    folder = out / ("geneval" if geneval else "dpg")
    check_sampling_settings(folder, settings_record(args.model, cfg, args.seed), out / f"{folder.name}.{SETTINGS_NAME}")
    image_fn = image_fn_of(draw, args.seed)
    mine = list(prompts)[rank::world]
    batch_size = args.max_batch or max(1, len(mine) * GENEVAL_SAMPLES)  # 0: all at once
    if geneval:
        drawn = write_geneval(image_fn, mine, folder, GENEVAL_SAMPLES, batch_size)
        complete = all(geneval_sample(folder, p, k).is_file() for p in prompts for k in range(GENEVAL_SAMPLES))
        score = (f"python evaluation/evaluate_images.py {folder} --outfile {out / 'geneval_results.jsonl'} "
                 "--model-path OBJECT_DETECTOR_FOLDER")
    else:
        drawn = write_dpg(image_fn, mine, folder, batch_size)
        complete = all((folder / f"{p.name}.png").is_file() for p in prompts)
        score = f"bash dpg_bench/dist_eval.sh {folder} {dpg_resolution(folder, prompts)}" if complete else ""
    print(f"drew {drawn} samples into {folder}")
    if complete:
        print(f"all {len(prompts)} prompts drawn; score with: {score}")
    else:
        print("unified-ar sample: some prompts are still missing (other ranks running?)", file=sys.stderr)


def check_paths(model_dir: str, out: str) -> None:
    """Fail before anything is written: the model folder (loaded only when there is work) and --out."""
    from unified_ar.modeling import CONFIG_NAME

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: model folder not found")
    if not (Path(model_dir) / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{model_dir}: not a unified model folder (no {CONFIG_NAME})")
    if Path(out).exists() and not Path(out).is_dir():
        raise FileExistsError(f"--out {out}: exists and is not a folder")


def main(argv: list[str] | None = None) -> int:
    from unified_ar.devices import resolve_device
    from unified_ar.eval.vqa_runner import dist_info

    args = build_parser().parse_args(argv)
    try:
        check_paths(args.model, args.out)
        rank, world = dist_info()
        device = resolve_device(args.device)
        cfg = image_config(args)
        draw = lazy_image_fn(lambda: load_draw(args.model, device, cfg, args.attn))  # a finished run loads none
        if args.prompts:
            sample_prompts(args, draw, cfg, rank, world)
        else:
            sample_benchmark(args, draw, cfg, rank, world)
    except (OSError, ValueError) as error:  # a missing / malformed prompts file or model folder
        print(f"unified-ar sample: {error}", file=sys.stderr)
        return 2
    return 0
