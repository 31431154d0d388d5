"""POPE (random / popular / adversarial), scored with LLaVA's ``eval_pope.py`` rules.

Files: ``coco_pope_{category}.json`` (one JSON object per line: ``question_id,
image, text, label``) under ``data_dir`` or ``data_dir/coco``; images
``val2014/{image}``. Question ids repeat across the three files, so ours are
``"{category}/{question_id}"``. Metrics per category plus their mean (LLaVA
papers quote the mean F1 / accuracy over the three).
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_jsonl, require, restrict, with_suffix,
)
from unified_ar.eval.metrics import pope_metrics

NAME = "pope"
CATEGORIES = ("random", "popular", "adversarial")


def _files(data_dir: str | Path) -> dict[str, Path]:
    root = Path(data_dir)
    found = {c: p for c in CATEGORIES for p in (root / f"coco_pope_{c}.json", root / "coco" / f"coco_pope_{c}.json")
             if p.is_file()}
    if not found:
        find_file(data_dir, [f"coco_pope_{c}.json" for c in CATEGORIES], "POPE questions")
    return found


def _rows(data_dir: str | Path) -> list[tuple[str, dict]]:
    out = []
    for category, path in _files(data_dir).items():
        for n, r in enumerate(read_jsonl(path)):
            for key in ("question_id", "image", "text", "label"):
                require(r, key, f"{path} line {n + 1}")
            out.append((category, r))
    return out


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / "val2014"
    return [VQASample(question_id=f"{c}/{r['question_id']}", image=str(image_dir / r["image"]),
                      prompt=with_suffix(r["text"], options.short_answer_suffix), question=r["text"],
                      answer=r["label"], category=c)
            for c, r in _rows(data_dir)]


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    rows = restrict(_rows(data_dir), lambda cr: f"{cr[0]}/{cr[1]['question_id']}", only)
    keys = [f"{c}/{r['question_id']}" for c, r in rows]
    missing_predictions(keys, predictions, NAME)
    per = {}
    for category in CATEGORIES:
        mine = [(k, r) for k, (c, r) in zip(keys, rows) if c == category]
        if mine:
            per[category] = pope_metrics([predictions[k] for k, _ in mine], [r["label"] for _, r in mine]).to_dict()
    mean = {m: sum(v[m] for v in per.values()) / len(per) for m in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
    return {"benchmark": NAME, "categories": per, "mean": mean, "num_questions": len(rows)}
