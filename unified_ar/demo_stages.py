"""The demo's stages, in order; each is a small function over the output directory.

Directory layout and the ``metrics.json`` schema: docs/CONTRACTS.md ("The demo").
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unified_ar.config import packaged_config
from unified_ar.demo import DemoConfig, command, run_stage, variants
from unified_ar.generation_config import GenerationConfig


def _rel(path: Path, out: Path) -> str:
    return str(Path(path).relative_to(out))


def stage_world(config: DemoConfig, out: Path) -> dict:
    from unified_ar.train.shapes.writer import write_world

    counts = {"train": config.train_images, "val": config.val_images, "test": config.test_images}
    write_world(out / "world", counts, config.seed, config.world)
    return {"counts": counts}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RuntimeError(f"{path}: expected this file from the previous command, it is missing")
    return json.loads(path.read_text())


def stage_vq(config: DemoConfig, out: Path) -> dict:
    command(["train-vq", "--config", str(packaged_config(config.vq_config)), "--out", str(out / "vq"),
             "--data.root", str(out / "world"), *config.vq_overrides])
    return _read_json(out / "vq" / "eval.json")


def stage_toklip(config: DemoConfig, out: Path) -> dict:
    command(["train-toklip", "--config", str(packaged_config(config.toklip_config)), "--out", str(out / "toklip"),
             "--data.root", str(out / "world"), "--vq_path", str(out / "vq" / "export"),
             *config.toklip_overrides])
    return _read_json(out / "toklip" / "eval.json")


def stage_recon(config: DemoConfig, out: Path) -> dict:
    """VQ reconstructions of val images beside the originals, judged by ShapesEval."""
    import torch
    from PIL import Image

    from unified_ar.eval.shapes_eval import evaluate_images
    from unified_ar.eval.t2i import image_name
    from unified_ar.tokenizer.transforms import to_tensor, to_uint8
    from unified_ar.tokenizer.vq import VQModel

    vq = VQModel.from_pretrained(out / "vq" / "export").eval()
    rows = [json.loads(line) for line in (out / "world" / "captions_val.jsonl").read_text().splitlines()]
    rows = rows[: config.recon_images]
    (out / "recon" / "originals").mkdir(parents=True, exist_ok=True)
    recons = []
    for start in range(0, len(rows), 32):
        chunk = rows[start:start + 32]
        pixels = np.stack([np.asarray(Image.open(out / "world" / r["image"]).convert("RGB")) for r in chunk])
        with torch.inference_mode():
            y = to_uint8(vq.decode(vq.encode(torch.stack([to_tensor(p) for p in pixels]))))
        for k, (orig, rec) in enumerate(zip(pixels, y)):
            name = image_name(start + k)
            Image.fromarray(orig).save(out / "recon" / "originals" / name)
            Image.fromarray(rec).save(out / "recon" / name)
            recons.append(rec)
    result = evaluate_images(recons, [r["spec"] for r in rows], config.world).summary()
    (out / "recon" / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    return {"recon_shapes_eval": result}


def stage_pretokenize(config: DemoConfig, out: Path) -> dict:
    """Encode the training images to VQ codes once, so training reads codes, not pixels."""
    world = out / "world"
    command(["pretokenize", str(world / "captions_train.jsonl"), str(world / "conversations_train.json"),
             "--vq", str(out / "vq" / "export"), "--out", str(out / "codes"),
             "--image-size", str(config.world.image_size), "--image-root", str(world)])
    return {}


def _stage_args(out: Path, run: Path, name: str, variant: str, init_from: Path | None) -> list[str]:
    world = out / "world"
    args = ["--run_dir", str(run / name), "--data.codes", str(out / "codes"),
            "--model.tokenizer", str(world / "tokenizer"),
            "--model.vq.path", str(out / "vq" / "export"),
            "--model.toklip.path", str(out / "toklip" / "export"),
            "--model.comprehension_features", variant,
            "--data.image_root", str(world)]
    if init_from is not None:
        args += ["--init_from", str(init_from)]
    return args


def _sources(world: Path, conversation_weight: float, captions: bool) -> list[str]:
    """The world's conversations (+ its captions, weight 1) as the stage's data sources."""
    sources = [{"kind": "conversations", "path": str(world / "conversations_train.json"),
                "weight": conversation_weight}]
    if captions:
        sources.append({"kind": "captions", "path": str(world / "captions_train.jsonl"), "weight": 1.0})
    return ["--data.sources", json.dumps(sources)]


def _train_summary(run_dir: Path, out: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"steps": len(records), "final_loss": float(np.mean([r["loss"] for r in records[-20:]])),
            "metrics_jsonl": _rel(run_dir / "metrics.jsonl", out)}


def stage_train(config: DemoConfig, out: Path, variant: str, stage: str) -> dict:
    run = out / "runs" / variant
    world = out / "world"
    if stage == "align":
        cfg, extra = config.align_config, config.align_overrides
        args = _stage_args(out, run, "align", variant, None) + _sources(world, 1.0, captions=False)
    else:
        cfg, extra = config.unified_config, config.unified_overrides
        args = (_stage_args(out, run, "unified", variant, run / "align" / "export")
                + _sources(world, config.conversation_weight, captions=True)
                + ["--generation.image.guidance_scale", str(config.cfg_scale)])  # the export's default
    command(["train", "--config", str(packaged_config(cfg)), *args, *extra])
    return _train_summary(run / stage, out)


# the splits the demo evaluates: val (scenes like training's) and test (every scene holds a
# colour-shape pair never seen in training: compositional generalisation); folder suffixes
EVAL_SPLITS = {"val": "", "test": "_test"}


def _eval_images(config: DemoConfig, split: str) -> int:
    return config.eval_val_images if split == "val" else config.test_images


def stage_eval_vqa(config: DemoConfig, out: Path, variant: str, split: str = "val") -> dict:
    """eval-vqa on the split's questions of its first images, with the export's own prompt format."""
    run = out / "runs" / variant
    folder = run / f"eval_vqa{EVAL_SPLITS[split]}"
    questions = json.loads((out / "world" / "vqa" / f"{split}_questions.json").read_text())["questions"]
    keep = set(sorted({q["image_id"] for q in questions})[: _eval_images(config, split)])
    limit = sum(q["image_id"] in keep for q in questions)  # questions are in image order
    command(["eval-vqa", "--benchmark", "vqav2", "--data", str(out / "world"), "--split", split,
             "--model", str(run / "unified" / "export"), "--out", str(folder),
             "--batch-size", str(config.eval_batch_size), "--limit", str(limit)])
    metrics = _read_json(folder / "metrics.json")
    return {"vqa": {"overall": metrics["overall"] / 100,
                    "by_type": {k: v / 100 for k, v in sorted(metrics["perQuestionType"].items())}}}


def stage_eval_t2i(config: DemoConfig, out: Path, variant: str, split: str = "val") -> dict:
    """ShapesEval of images drawn from the split's prompts, with the export's own guidance."""
    run = out / "runs" / variant
    folder = run / f"eval_t2i{EVAL_SPLITS[split]}"
    command(["eval-t2i", "--model", str(run / "unified" / "export"),
             "--prompts", str(out / "world" / f"t2i_prompts_{split}.jsonl"), "--out", str(folder),
             "--limit", str(_eval_images(config, split)),
             "--batch-size", str(config.eval_batch_size), "--seed", str(config.seed)])
    summary = _read_json(folder / "metrics.json")["shapes_eval"]
    guidance = GenerationConfig.load(run / "unified" / "export").image.guidance_scale
    return {"t2i": {**summary, "cfg_scale": guidance}}


def _evaluate(config: DemoConfig, out: Path, variant: str, timings: dict) -> dict:
    """The run's VQA and ShapesEval on val and on the held-out-pair test split."""
    results = {}
    for split, suffix in EVAL_SPLITS.items():
        vqa = run_stage(out, f"runs/{variant}/eval_vqa{suffix}",
                        lambda split=split: stage_eval_vqa(config, out, variant, split), timings)
        t2i = run_stage(out, f"runs/{variant}/eval_t2i{suffix}",
                        lambda split=split: stage_eval_t2i(config, out, variant, split), timings)
        results[f"vqa{suffix}"], results[f"t2i{suffix}"] = vqa["vqa"], t2i["t2i"]
    return results


def run_all(config: DemoConfig, out: Path) -> dict:
    """Every stage in order; returns the ``metrics.json`` content (without the run header)."""
    from unified_ar.demo_interleaved import stage_interleaved

    timings: dict[str, float] = {}
    run_stage(out, "world", lambda: stage_world(config, out), timings)
    vq = run_stage(out, "vq", lambda: stage_vq(config, out), timings)
    toklip = run_stage(out, "toklip", lambda: stage_toklip(config, out), timings)
    recon = run_stage(out, "recon", lambda: stage_recon(config, out), timings)
    run_stage(out, "pretokenize", lambda: stage_pretokenize(config, out), timings)
    runs = {}
    for v in variants(config):
        train = {s: run_stage(out, f"runs/{v}/{s}", lambda s=s: stage_train(config, out, v, s), timings)
                 for s in ("align", "unified")}
        evaluation = _evaluate(config, out, v, timings)
        inter = run_stage(out, f"runs/{v}/interleaved", lambda: stage_interleaved(config, out, v), timings)
        runs[v] = {**evaluation, "interleaved": inter["interleaved"],
                   "train": {s: {k: r[k] for k in ("steps", "seconds", "final_loss", "metrics_jsonl")}
                             for s, r in train.items()}}
    tokenizers = {
        "vq": {"val_psnr": vq["val_psnr"], "codebook_usage": vq["codebook_usage"],
               "patch_code_agreement": vq["patch_code_agreement"], "patches_per_code": vq["patches_per_code"],
               "recon_shapes_eval": recon["recon_shapes_eval"]},
        "toklip": {"r_at_1": toklip["r_at_1"], "color_accuracy": toklip["color_accuracy"]},
    }
    return {"stage_seconds": timings, "tokenizers": tokenizers, "runs": runs,
            "total_seconds": round(sum(timings.values()), 1)}
