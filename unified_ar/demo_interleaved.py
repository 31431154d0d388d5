"""The interleaved check: the model draws a prompt, then answers questions about its own
drawing straight from the codes it generated; its answers are compared with what
ShapesEval reads from the decoded pixels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unified_ar.demo import DemoConfig


def detected_scene(image: np.ndarray, world):
    """The scene ShapesEval reads from ``image``, or None when it reads no object or two in a cell."""
    from unified_ar.eval.shapes_eval import detect
    from unified_ar.train.shapes.world import Object, Scene

    found = detect(image, world)
    cells = [d.cell for d in found]
    if not found or len(set(cells)) != len(cells):
        return None
    return Scene(tuple(Object(d.shape, d.color, d.size, tuple(d.cell)) for d in found))


def stage_interleaved(config: DemoConfig, out: Path, variant: str) -> dict:
    from unified_ar.eval.t2i import read_prompts
    from unified_ar.modeling import UnifiedARModel
    from unified_ar.sampling import ImageSamplingConfig, answer_questions, generate_images
    from unified_ar.train.shapes.world import questions

    run = out / "runs" / variant
    model = UnifiedARModel.from_pretrained(run / "unified" / "export").eval()
    prompts = read_prompts(out / "world" / "t2i_prompts_val.jsonl")[: config.interleaved_prompts]
    samples = generate_images(model, [p["prompt"] for p in prompts], seeds=[config.seed + p["index"] for p in prompts],
                              cfg=ImageSamplingConfig.for_model(model))  # the export's guidance
    rng = np.random.default_rng(config.seed)
    asked, codes, expected, records = [], [], [], []
    for p, image, image_codes in zip(prompts, samples.images, samples.codes):
        scene = detected_scene(np.asarray(image.convert("RGB")), config.world)
        if scene is None:
            records.append({"index": p["index"], "prompt": p["prompt"], "read": None})
            continue
        for q in questions(scene, rng, config.world):
            asked.append(q.question)
            codes.append(image_codes.flatten())
            expected.append(q.answer)
            records.append({"index": p["index"], "question": q.question, "pixels_say": q.answer})
    answers = answer_questions(model, codes, asked, batch_size=config.eval_batch_size) if asked else []
    it = iter(answers)
    for r in records:
        if "question" in r:
            r["model_says"] = next(it)
    agree = [a.strip().lower() == e for a, e in zip(answers, expected)]
    (run / "interleaved.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = {"agreement": float(np.mean(agree)) if agree else 0.0, "questions": len(agree)}
    (run / "interleaved.json").write_text(json.dumps(result, indent=1) + "\n")
    return {"interleaved": result}
