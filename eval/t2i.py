"""``unified-ar eval-t2i``: text-to-image evaluation.

Images come from a folder (``--images DIR``: ``NNNN.png`` named by the prompt's
``index``) or are sampled from a model (``--model DIR``; written to
``OUT/images/NNNN.png``, existing files are kept, so a killed run resumes; ``OUT/images/sampling.json``
records the model, guidance and seed, and a folder sampled with other settings is an error).
Prompts are JSONL ``{"index", "prompt", "spec"}`` (the Shapes world's
``t2i_prompts_{split}.jsonl``). Reported: ShapesEval (when prompts carry a
spec), TokLIP score (``--toklip DIR --text-tokenizer DIR``), FID
(``--fid-ref DIR --fid-extractor FILE``); ``--geneval-out DIR`` exports the
GenEval folder layout. Writes ``OUT/metrics.json``, ``OUT/metrics.md`` and
``OUT/shapes_eval.jsonl`` (per-image detections).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from unified_ar.config import from_dict
from unified_ar.devices import DEVICE_HELP
from unified_ar.train.shapes.world import WorldConfig


def read_prompts(path: str | Path) -> list[dict]:
    """Prompt records; each needs ``index`` (int, unique) and ``prompt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompts file not found")
    rows, seen = [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("index"), int) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}:{n}: a prompt needs an int 'index' and a str 'prompt'")
        if row["index"] in seen:
            raise ValueError(f"{path}:{n}: index {row['index']} appears twice")
        seen.add(row["index"])
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def world_config(prompts_path: str | Path, world_json: str | Path | None) -> WorldConfig:
    """The world's config from ``world.json`` (given, or beside the prompts file), else defaults."""
    path = Path(world_json) if world_json else Path(prompts_path).parent / "world.json"
    if not path.is_file():
        if world_json:
            raise FileNotFoundError(f"--world {path}: file not found")
        return WorldConfig()
    data = json.loads(path.read_text())
    return from_dict(WorldConfig, data.get("config", data), str(path))


def image_name(index: int) -> str:
    return f"{index:04d}.png"


def read_images(folder: str | Path, prompts: Sequence[dict]) -> list[np.ndarray]:
    """uint8 [H, W, 3] per prompt, from files whose stem is the prompt index (``0007.png`` or ``7.png``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: images folder not found")
    by_index = {int(p.stem): p for p in folder.iterdir()
                if p.suffix.lower() in (".png", ".jpg", ".jpeg") and re.fullmatch(r"\d+", p.stem)}
    missing = [p["index"] for p in prompts if p["index"] not in by_index]
    if missing:
        raise FileNotFoundError(f"{folder}: no image for {len(missing)} prompt(s), e.g. index {missing[0]} "
                                f"(expected {image_name(missing[0])})")
    return [np.asarray(Image.open(by_index[p["index"]]).convert("RGB")) for p in prompts]


def generate_missing(image_fn: Callable, prompts: Sequence[dict], folder: str | Path, batch_size: int = 8) -> int:
    """Sample images for prompts whose file is absent; write each batch at once. Returns how many."""
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [p for p in prompts if not (folder / image_name(p["index"])).is_file()]
    for start in tqdm(range(0, len(todo), batch_size), desc="t2i", unit="batch"):
        batch = todo[start:start + batch_size]
        images = image_fn([p["prompt"] for p in batch], [p["index"] for p in batch])
        for p, img in zip(batch, images):
            tmp = folder / f".{image_name(p['index'])}.tmp.png"
            Image.fromarray(np.asarray(img, dtype=np.uint8)).save(tmp)
            tmp.replace(folder / image_name(p["index"]))  # a killed run never leaves half a PNG
    return len(todo)


def export_geneval(prompts: Sequence[dict], images: Sequence[np.ndarray], out: str | Path) -> Path:
    """GenEval layout: ``OUT/{index:05d}/metadata.jsonl`` + ``OUT/{index:05d}/samples/00000.png``."""
    out = Path(out)
    for p, img in zip(prompts, images):
        folder = out / f"{p['index']:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in p.items() if k != "index"}
        (folder / "metadata.jsonl").write_text(json.dumps(meta))
        Image.fromarray(img).save(folder / "samples" / "00000.png")
    return out


def toklip_score(model, tokenize: Callable[[str], list[int]], images: Sequence[np.ndarray],
                 prompts: Sequence[str], image_size: int | None = None) -> float:
    """Mean cosine similarity of TokLIP pooled image and text embeddings.

    ``model.encode_image(pixels [1,3,H,W] in [-1,1])`` returns pooled [1,D] (or
    ``(tokens, pooled)``); ``model.encode_text(ids [1,L]) -> [1,D]``. One prompt at a
    time, so no padding enters the text tower."""
    import torch

    from unified_ar.tokenizer.transforms import image_pixels, to_tensor

    sims = []
    with torch.inference_mode():
        for img, text in zip(images, prompts):
            pil = Image.fromarray(img)
            pixels = (image_pixels(pil, image_size) if image_size is not None else to_tensor(pil))[None]
            pooled = model.encode_image(pixels)
            pooled = pooled[1] if isinstance(pooled, tuple) else pooled
            text_emb = model.encode_text(torch.tensor([tokenize(text)], dtype=torch.long))
            sims.append(float(torch.nn.functional.cosine_similarity(pooled.float(), text_emb.float()).mean()))
    return sum(sims) / len(sims)


def load_toklip(toklip_dir: str, tokenizer_dir: str):
    """(TokLIP model, tokenize function) from local folders."""
    try:
        from unified_ar.tokenizer.toklip import TokLIP
    except ModuleNotFoundError as e:
        if e.name != "unified_ar.tokenizer.toklip":
            raise
        raise RuntimeError("--toklip needs unified_ar/tokenizer/toklip.py, which is not in this checkout yet") from None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return TokLIP.from_pretrained(toklip_dir).eval(), lambda s: tokenizer(s)["input_ids"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unified-ar eval-t2i", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help="JSONL of {index, prompt, spec}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of NNNN.png images, one per prompt index")
    src.add_argument("--model", help="model directory to sample the images from")
    src.add_argument("--render", action="store_true",
                     help="judge the world's own renders of each spec (the judge's self-check: 1.0)")
    p.add_argument("--shuffle-seed", type=int, default=None,
                   help="permute the images across prompts first (a wrong-image control)")
    p.add_argument("--out", default="eval_out/t2i", help="output folder")
    p.add_argument("--world", default=None, help="world.json (default: beside the prompts file)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance (model mode)")
    p.add_argument("--seed", type=int, default=0, help="prompt i is sampled with seed + index")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (model mode)")
    p.add_argument("--geneval-out", default=None, help="also export the GenEval folder layout here")
    p.add_argument("--toklip", default=None, help="TokLIP model folder: report the TokLIP score")
    p.add_argument("--text-tokenizer", default=None, help="text tokenizer folder for --toklip")
    p.add_argument("--fid-ref", default=None, help="reference image folder: report FID")
    p.add_argument("--fid-extractor", default=None, help="TorchScript feature extractor file for FID")
    return p


def _images(args: argparse.Namespace, prompts: list[dict], out: Path) -> tuple[list[np.ndarray], Path]:
    if args.render:
        from unified_ar.train.shapes.world import Scene, render

        world = world_config(args.prompts, args.world)
        folder = out / "renders"
        folder.mkdir(parents=True, exist_ok=True)
        images = [render(Scene.from_dict(p["spec"]), world) for p in prompts]
        for p, img in zip(prompts, images):
            Image.fromarray(img).save(folder / image_name(p["index"]))
        return images, folder
    if args.images:
        return read_images(args.images, prompts), Path(args.images)
    from unified_ar.eval.model_adapter import load_image_fn

    folder = out / "images"
    check_sampling_settings(folder, sampling_settings(args.model, args.cfg_scale, args.seed))
    generate_missing(load_image_fn(args.model, args.cfg_scale, args.seed, args.device), prompts, folder,
                     args.batch_size)
    return read_images(folder, prompts), folder


SETTINGS_NAME = "sampling.json"


def sampling_settings(model_dir: str | Path, cfg_scale: float, seed: int) -> dict:
    """What the images in ``OUT/images`` were sampled with: the model directory, its weight files
    (name, size, mtime) so a retrained model in the same place counts as another, guidance, seed."""
    model = Path(model_dir).resolve()
    weights = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(model.glob("*.safetensors"))}
    return {"model": str(model), "weights": weights, "cfg_scale": cfg_scale, "seed": seed}


def check_sampling_settings(folder: Path, settings: dict) -> None:
    """A resumed run keeps the images already drawn, so they must come from the same settings:
    a folder sampled otherwise is an error naming what differs (nothing is deleted)."""
    path = folder / SETTINGS_NAME
    if path.is_file():
        saved = json.loads(path.read_text())
        differ = [k for k in settings if saved.get(k) != settings[k]]
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} there, {settings[k]!r} now" for k in differ
                              if k != "weights") or "the model's weight files changed"
            raise ValueError(f"{folder} holds images sampled with other settings ({shown}); "
                             f"use another --out or delete {folder}")
    elif folder.is_dir() and any(folder.glob("*.png")):
        raise ValueError(f"{folder} holds images but no {SETTINGS_NAME}: their settings are unknown; "
                         f"use another --out or delete {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1) + "\n")


def evaluate(args: argparse.Namespace) -> dict:
    from unified_ar.eval.shapes_eval import evaluate_images

    prompts = read_prompts(args.prompts)[: args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, folder = _images(args, prompts, out)
    metrics: dict = {"prompts": args.prompts, "images": str(folder), "num_images": len(images)}
    if args.shuffle_seed is not None:
        order = np.random.default_rng(args.shuffle_seed).permutation(len(images))
        images = [images[i] for i in order]
        metrics["shuffled_with_seed"] = args.shuffle_seed
    if all("spec" in p for p in prompts):
        result = evaluate_images(images, [p["spec"] for p in prompts], world_config(args.prompts, args.world))
        metrics["shapes_eval"] = result.summary()
        (out / "shapes_eval.jsonl").write_text("".join(
            json.dumps({"index": p["index"], **r}) + "\n" for p, r in zip(prompts, result.per_image)))
    if args.toklip:
        if not args.text_tokenizer:
            raise ValueError("--toklip needs --text-tokenizer DIR (the tokenizer of its text tower)")
        model, tokenize = load_toklip(args.toklip, args.text_tokenizer)
        size = getattr(getattr(model, "config", None), "image_size", None)
        metrics["toklip_score"] = toklip_score(model, tokenize, images, [p["prompt"] for p in prompts], size)
    if args.fid_ref:
        from unified_ar.eval.fid import fid_folders

        metrics["fid"] = fid_folders(folder, args.fid_ref, args.fid_extractor, args.batch_size)
    if args.geneval_out:
        metrics["geneval_export"] = str(export_geneval(prompts, images, args.geneval_out))
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fid_extractor and not args.fid_ref:
        print("eval-t2i: --fid-extractor needs --fid-ref DIR", file=sys.stderr)
        return 2
    try:
        metrics = evaluate(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"unified-ar eval-t2i: {e}", file=sys.stderr)
        return 2
    from unified_ar.eval.vqa_runner import metrics_markdown

    out = Path(args.out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "metrics.md").write_text(metrics_markdown(metrics, f"text-to-image ({metrics['num_images']} prompts)"))
    print(json.dumps(metrics, indent=1))
    return 0
