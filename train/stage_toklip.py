"""``unified-ar train-toklip --config configs/toklip/shapes.yaml --out DIR [--section.key VALUE ...]``.

Trains TokLIP (token encoder + text tower, SigLIP loss) on caption pairs over the
codes of a trained, frozen VQ (``vq_path``), through the project's engine and
loop. The images are encoded to codes once, before training. Then it prints and
writes (``DIR/eval.json``) zero-shot image->caption R@1 among the first
``eval.retrieval_candidates`` validation pairs and single-object colour
accuracy, each colour's text embedding the mean over its prompts ("a large red circle in the top
left.", ... over every size, shape and position). ``--eval MODEL_DIR`` only evaluates.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from unified_ar.config import ConfigError, load_config
from unified_ar.tokenizer.toklip import (TOKLIP_PRESETS, TokLIP, TokLIPConfig, TokLIPTextConfig,
                                         TokLIPVisionConfig, load_text_tokenizer)
from unified_ar.tokenizer.vq import VQModel
from unified_ar.train.config import TrainConfig
from unified_ar.train.shapes.world import COLORS as WORLD_COLORS
from unified_ar.train.shapes.world import POSITIONS, SHAPES, SIZES
from unified_ar.train.stage_vq import ImageDataConfig, TensorBatches, load_images, read_records, to_pixels

COLORS = tuple(WORLD_COLORS)  # the Shapes world's colour names, the classes of the colour check
# what a colour prompt template may name besides {color}: each is filled with every value
PROMPT_FIELDS = {"size": SIZES, "shape": SHAPES, "position": tuple(POSITIONS.values())}


@dataclass
class ToklipModelConfig:
    """TokLIPConfig without the VQ part, which comes from ``vq_path``."""

    vision_cfg: TokLIPVisionConfig = field(default_factory=lambda: TOKLIP_PRESETS["TokLIP-shapes"].vision_cfg)
    text_cfg: TokLIPTextConfig = field(default_factory=lambda: TOKLIP_PRESETS["TokLIP-shapes"].text_cfg)
    init_logit_scale: float = math.log(10.0)
    init_logit_bias: float = -10.0
    attn_backend: str = "sdpa"


def prompt_fields(template: str) -> list[str]:
    """The fields a colour prompt template names besides {color}, sorted. A ConfigError unless it
    names {color} and nothing outside ``PROMPT_FIELDS``."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = names - {"color"} - set(PROMPT_FIELDS)
    if "color" not in names or unknown:
        raise ConfigError(f"eval.color_prompts: {template!r} must name {{color}} and may name "
                          f"{', '.join('{' + k + '}' for k in PROMPT_FIELDS)}"
                          + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    return sorted(names - {"color"})


@dataclass
class ToklipEvalConfig:
    retrieval_candidates: int = 100
    # The colour's text embedding is the mean over these templates (CLIP-style ensembling), each
    # filled with the colour and with every combination of the {size} / {shape} / {position} it
    # names. The default is the captions' own wording (docs/TOKENIZER.md, "The colour prompts").
    color_prompts: list[str] = field(default_factory=lambda: ["a {size} {color} {shape} in the {position}."])
    batch_size: int = 100

    def __post_init__(self) -> None:
        for template in self.color_prompts:  # a bad template fails at load time, not after training
            prompt_fields(template)


@dataclass
class ToklipStageConfig:
    vq_path: str = "runs/vq/export"  # a VQModel.save_pretrained directory
    tokenizer: str | None = None  # text tokenizer directory; default: data.root/tokenizer
    model: ToklipModelConfig = field(default_factory=ToklipModelConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: ToklipEvalConfig = field(default_factory=ToklipEvalConfig)


@torch.no_grad()
def encode_codes(vq: VQModel, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """uint8 [N,3,H,W] -> codes [N, h*w] long."""
    vq.eval()
    return torch.cat([vq.encode(to_pixels(images[i:i + batch_size])).flatten(1)
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def _image_embeddings(model: TokLIP, codes: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([F.normalize(model.encode_codes(codes[i:i + batch_size]).pooled, dim=-1)
                      for i in range(0, len(codes), batch_size)])


@torch.no_grad()
def _text_embeddings(model: TokLIP, texts: list[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(model.tokenize(texts)), dim=-1)


@torch.no_grad()
def evaluate_toklip(model: TokLIP, records: list[dict], codes: torch.Tensor, config: ToklipEvalConfig) -> dict:
    """Zero-shot image->caption R@1 among the first N pairs, and colour accuracy on single-object images.

    ``records``: caption records (with ``spec``) aligned with ``codes`` [M, N_codes]."""
    model.eval()
    n = min(config.retrieval_candidates, len(records))
    sims = _image_embeddings(model, codes[:n], config.batch_size) @ _text_embeddings(
        model, [r["caption"] for r in records[:n]]).t()
    r_at_1 = (sims.argmax(dim=1) == torch.arange(n)).float().mean().item()
    single = [i for i, r in enumerate(records) if len(r["spec"]["objects"]) == 1]
    prompts = torch.stack([F.normalize(_text_embeddings(
        model, color_prompts(config.color_prompts, c)).mean(0), dim=-1) for c in COLORS])
    predicted = (_image_embeddings(model, codes[single], config.batch_size) @ prompts.t()).argmax(dim=1)
    truth = torch.tensor([COLORS.index(records[i]["spec"]["objects"][0]["color"]) for i in single])
    confusions = Counter(f"{COLORS[t]}->{COLORS[p]}" for t, p in zip(truth.tolist(), predicted.tolist()) if t != p)
    return {"r_at_1": r_at_1, "retrieval_candidates": n, "color_accuracy": (predicted == truth).float().mean().item(),
            "color_images": len(single), "color_confusions": dict(confusions.most_common())}


def color_prompts(templates: list[str], color: str) -> list[str]:
    """Every prompt of ``templates`` for ``color``: each template filled with the colour and with every
    combination of the world's values of the other fields it names (see ``PROMPT_FIELDS``)."""
    prompts = []
    for template in templates:
        fields = prompt_fields(template)
        for values in itertools.product(*(PROMPT_FIELDS[f] for f in fields)):
            prompts.append(template.format(color=color, **dict(zip(fields, values))))
    return prompts


def build_model(config: ToklipStageConfig, vq: VQModel, tokenizer) -> TokLIP:
    m = config.model
    if len(tokenizer) > m.text_cfg.vocab_size:
        raise ConfigError(f"model.text_cfg.vocab_size {m.text_cfg.vocab_size} < the tokenizer's {len(tokenizer)} tokens")
    toklip_config = TokLIPConfig(vision_cfg=m.vision_cfg, text_cfg=m.text_cfg, vq_cfg=vq.config,
                                 init_logit_scale=m.init_logit_scale, init_logit_bias=m.init_logit_bias,
                                 attn_backend=m.attn_backend)
    model = TokLIP(toklip_config, vq=vq)
    model.tokenizer = tokenizer
    return model


def _train(config: ToklipStageConfig, out: str, resume: bool) -> TokLIP:
    from unified_ar.train.loop import train  # deepspeed only when training

    data = config.data
    vq = VQModel.from_pretrained(config.vq_path)
    model = build_model(config, vq, load_text_tokenizer(config.tokenizer or Path(data.root) / "tokenizer"))
    records = read_records(data.root, data.train_split)
    codes = encode_codes(vq, load_images(data.root, records, data.image_size))
    ids = model.tokenize([r["caption"] for r in records])
    batches = TensorBatches({"codes": codes, "input_ids": ids}, config.train.micro_batch_size, config.train.seed)
    result = train(model, batches, config.train, out, resume=resume, full_config=config)
    if result.export_dir is not None:  # evaluate what was saved, not the live training object
        return TokLIP.from_pretrained(result.export_dir)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unified-ar train-toklip", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML file (ToklipStageConfig)")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--eval", metavar="MODEL_DIR", help="only evaluate a saved TokLIP on data.val_split")
    args, overrides = parser.parse_known_args(argv)
    config = load_config(ToklipStageConfig, args.config, overrides)
    torch.manual_seed(config.train.seed)
    if args.eval:
        model = TokLIP.from_pretrained(args.eval)
        if model.tokenizer is None:
            model.tokenizer = load_text_tokenizer(config.tokenizer or Path(config.data.root) / "tokenizer")
    elif args.out:
        model = _train(config, args.out, args.resume)
    else:
        raise ConfigError("--out is required for training (or --eval MODEL_DIR)")
    data = config.data
    records = read_records(data.root, data.val_split)[:data.max_val]
    codes = encode_codes(model.vq, load_images(data.root, records, data.image_size))
    result = evaluate_toklip(model, records, codes, config.eval)
    print(f"TokLIP on {data.root} {data.val_split}: image->caption R@1 {result['r_at_1']:.3f} among "
          f"{result['retrieval_candidates']} candidates; colour accuracy {result['color_accuracy']:.3f} "
          f"on {result['color_images']} single-object images (mistakes, true->predicted: "
          f"{result['color_confusions'] or 'none'})")
    if args.out:
        (Path(args.out) / "eval.json").write_text(json.dumps(result, indent=2))
    return 0
