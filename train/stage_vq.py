"""``unified-ar train-vq --config configs/vq/shapes.yaml --out DIR [--section.key VALUE ...]``.

Trains the VQ tokenizer on the images of a caption dataset (the Shapes world's
``captions_{split}.jsonl``) through the project's engine and loop, then prints
and writes (``DIR/eval.json``) the validation PSNR and codebook usage. With
``--eval MODEL_DIR`` it only evaluates a saved model.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from unified_ar.config import ConfigError, load_config
from unified_ar.tokenizer.losses import psnr
from unified_ar.tokenizer.vq import VQ_PRESETS, VQConfig, VQModel, grid_patches
from unified_ar.train.config import TrainConfig


@dataclass
class ImageDataConfig:
    root: str = "data/shapes"  # a directory written by `unified-ar world`
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 96
    max_val: int = 200


@dataclass
class VQStageConfig:
    model: VQConfig = field(default_factory=lambda: VQ_PRESETS["VQ-shapes"])
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_batch_size: int = 50


def read_records(root: str | Path, split: str) -> list[dict]:
    """The records of ``captions_{split}.jsonl`` under ``root``."""
    path = Path(root) / f"captions_{split}.jsonl"
    if not path.is_file():
        raise ConfigError(f"data.root: {path} not found (generate it with `unified-ar world --out {root}`)")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def load_images(root: str | Path, records: list[dict], size: int) -> torch.Tensor:
    """uint8 [N,3,size,size] of the records' images (an image of another size is an error)."""
    out = torch.empty(len(records), 3, size, size, dtype=torch.uint8)
    for i, rec in enumerate(records):
        path = Path(root) / rec["image"]
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        if array.shape[:2] != (size, size):
            raise ValueError(f"{path}: image is {array.shape[1]}x{array.shape[0]}, data.image_size is {size}")
        out[i] = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return out


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float [B,3,H,W] in [-1,1]."""
    return images.float() / 127.5 - 1.0


class TensorBatches:
    """Shuffled micro-batches of in-memory tensors, a pure function of (seed, position) for exact resume.

    ``tensors`` share their first dimension; ``convert`` maps a name to a function applied per batch."""

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int, convert: dict | None = None):
        sizes = {len(t) for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"tensors differ in length: { {k: len(t) for k, t in tensors.items()} }")
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.convert = convert or {}
        self.size = sizes.pop()

    def iter_from(self, position: int, rank: int, world_size: int) -> Iterator[tuple[int, dict]]:
        per_epoch = self.size // (self.batch_size * world_size)
        if per_epoch == 0:
            raise ValueError(f"{self.size} examples cannot fill one batch of {self.batch_size} x {world_size} ranks")
        while True:
            epoch, k = divmod(position, per_epoch)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            start = (k * world_size + rank) * self.batch_size
            idx = order[start:start + self.batch_size]
            position += 1
            yield position, {n: self.convert.get(n, lambda x: x)(t[idx]) for n, t in self.tensors.items()}


@torch.no_grad()
def evaluate_vq(model: VQModel, images: torch.Tensor, batch_size: int = 50) -> dict[str, float]:
    """Mean PSNR (dB) of reconstructions and the fraction of the codebook used on uint8 ``images`` [N,3,H,W]."""
    model.eval()
    scores, codes = [], []
    for i in range(0, len(images), batch_size):
        pixels = to_pixels(images[i:i + batch_size])
        out = model(pixels)
        scores.append(psnr(out.recon, pixels))
        codes.append(out.codes.flatten())
    codes = torch.cat(codes)
    used = torch.unique(codes).numel()
    return {"val_psnr": torch.cat(scores).mean().item(), "codebook_usage": used / model.config.codebook_size,
            "codes_used": used, "images": len(images),
            **patch_code_consistency(images, codes, model.config.downsample_factor)}


def patch_code_consistency(images: torch.Tensor, codes: torch.Tensor, patch: int) -> dict[str, float]:
    """How deterministic the tokenizer is on ``images`` [N,3,H,W] uint8 with ``codes`` [N*h*w]
    (row-major per image) for ``patch`` x ``patch`` grid cells.

    ``patch_code_agreement``: over cells whose exact pixels occur more than once, the fraction
    whose code is the one most often given to those pixels (1.0: equal patches, equal codes;
    an LLM predicting codes needs this). ``patches_per_code``: distinct pixel patches per used
    code (above 1: the code cannot say which one it was)."""
    _, content = torch.unique(grid_patches(images, patch), dim=0, return_inverse=True)
    pairs, counts = torch.unique(torch.stack([content, codes]), dim=1, return_counts=True)
    per_content = torch.bincount(content)
    best = torch.zeros_like(per_content).scatter_reduce(0, pairs[0], counts, reduce="amax")
    repeated = per_content > 1
    agreement = best[repeated].sum().item() / max(per_content[repeated].sum().item(), 1)
    per_code = torch.bincount(pairs[1])
    return {"patch_code_agreement": agreement, "patches_per_code": per_code[per_code > 0].float().mean().item()}


def check_foreground_schedule(config: VQStageConfig, source: str | None) -> None:
    """The foreground weight must reach 0 by the last step: a ``train.max_steps`` override that
    leaves ``model.foreground_loss_steps`` beyond it is an error naming both."""
    steps, max_steps = config.model.foreground_loss_steps, config.train.max_steps
    if config.model.foreground_loss_weight > 0 and steps > max_steps:
        raise ConfigError(f"{source or 'config'}: model.foreground_loss_steps = {steps} > train.max_steps = {max_steps}: "
                          f"the foreground weight would still be {1 - max_steps / steps:.0%} of its start at the end; "
                          f"set --model.foreground_loss_steps {max_steps}")


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="unified-ar train-vq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML file (VQStageConfig: model, data, train)")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--eval", metavar="MODEL_DIR", help="only evaluate a saved VQ model on data.val_split")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = _parse(argv)
    config = load_config(VQStageConfig, args.config, overrides)
    check_foreground_schedule(config, args.config)
    data = config.data
    val = load_images(data.root, read_records(data.root, data.val_split)[:data.max_val], data.image_size)
    if args.eval:
        model = VQModel.from_pretrained(args.eval)
    else:
        if not args.out:
            raise ConfigError("--out is required for training")
        from unified_ar.train.loop import train  # deepspeed only when training

        images = load_images(data.root, read_records(data.root, data.train_split), data.image_size)
        batches = TensorBatches({"pixels": images}, config.train.micro_batch_size, config.train.seed,
                                {"pixels": to_pixels})
        torch.manual_seed(config.train.seed)
        model = VQModel(config.model)
        result = train(model, batches, config.train, args.out, resume=args.resume, full_config=config)
        if result.export_dir is not None:  # evaluate what was saved, not the live training object
            model = VQModel.from_pretrained(result.export_dir)
    result = evaluate_vq(model, val, config.eval_batch_size)
    print(f"VQ on {data.root} {data.val_split} ({result['images']} images): val PSNR {result['val_psnr']:.2f} dB, "
          f"codebook usage {result['codebook_usage']:.3f} ({result['codes_used']}/{model.config.codebook_size}), "
          f"patch-code agreement {result['patch_code_agreement']:.3f}, {result['patches_per_code']:.2f} patches per code")
    if args.out:
        (Path(args.out) / "eval.json").write_text(json.dumps(result, indent=2))
    return 0
