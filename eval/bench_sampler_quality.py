"""Quality and LLM forwards of each text-to-image sampler on a trained model, at equal settings.

Draws the first ``--limit`` prompts of a Shapes-world prompts file with one-code decoding and
with speculative Jacobi decoding (the model's own ``generation_config.json`` settings for
everything else, prompt ``index`` with seed ``--seed + index``), and prints ShapesEval of
each and the LLM forwards per image:

    python -m unified_ar.eval.bench_sampler_quality --model OUT/runs/toklip/unified/export \\
        --prompts OUT/world/t2i_prompts_val.jsonl --limit 200
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from unified_ar.devices import DEVICE_HELP

SAMPLERS = {"one code per forward": {"sampler": "next_token"},
            "speculative Jacobi": {"sampler": "jacobi"}}


def measure(model, prompts: list[dict], world, seed: int, batch_size: int, settings: dict) -> dict:
    """ShapesEval, forwards per image and seconds of one sampler over ``prompts``."""
    from unified_ar.compiled_decode import count_forwards
    from unified_ar.eval.shapes_eval import evaluate_images
    from unified_ar.sampling import ImageSamplingConfig, generate_images

    cfg = ImageSamplingConfig.for_model(model, **settings)
    images = []
    start = time.perf_counter()
    with count_forwards(model) as forwards:
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i:i + batch_size]
            out = generate_images(model, [p["prompt"] for p in batch], seeds=[seed + p["index"] for p in batch],
                                  cfg=cfg)
            images += [np.asarray(img.convert("RGB")) for img in out.images]
    seconds = time.perf_counter() - start
    batches = -(-len(prompts) // batch_size)
    summary = evaluate_images(images, [p["spec"] for p in prompts], world).summary()
    return {"shapes_eval": {k: summary[k] for k in ("color", "shape", "size", "position", "count", "exact")},
            # every forward advances a whole batch: forwards per batch = forwards per image
            "llm_forwards_per_image": forwards[0] / batches, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    from unified_ar.eval.t2i import read_prompts, world_config
    from unified_ar.eval.model_adapter import load_model

    p = argparse.ArgumentParser(prog="python -m unified_ar.eval.bench_sampler_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", required=True, help="a Shapes world's t2i_prompts_*.jsonl")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--jacobi-window", type=int, default=16)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = p.parse_args(argv)
    try:
        prompts = read_prompts(args.prompts)[: args.limit]
        world = world_config(args.prompts, None)
        model = load_model(args.model, args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"bench_sampler_quality: {e}", file=sys.stderr)
        return 2
    rows = {}
    for name, settings in SAMPLERS.items():
        if settings["sampler"] == "jacobi":
            settings = {**settings, "jacobi_window": args.jacobi_window}
        rows[name] = measure(model, prompts, world, args.seed, args.batch_size, settings)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    base, fast = rows["one code per forward"], rows["speculative Jacobi"]
    print(json.dumps({"prompts": len(prompts), "guidance_scale": model.generation_config.image.guidance_scale,
                      "forwards_ratio": base["llm_forwards_per_image"] / fast["llm_forwards_per_image"],
                      "exact_difference": fast["shapes_eval"]["exact"] - base["shapes_eval"]["exact"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
