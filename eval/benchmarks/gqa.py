"""GQA test-dev balanced: exact match, as LLaVA-1.5 reports it.

Files: ``testdev_balanced_questions.json`` (or ``{split}_questions.json`` with
``--split``), a mapping ``question_id -> {imageId, question, answer, types}``;
images ``images/{imageId}.jpg``. Predictions are cleaned as LLaVA's
``convert_gqa_for_eval.py`` does (trailing periods stripped, lower-cased) and
compared with ``answer`` as the official ``eval.py`` does; accuracy is also
broken down by the ``types.structural`` and ``types.semantic`` labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_json, require, restrict, with_suffix,
)
from unified_ar.eval.metrics import exact_match_accuracy, gqa_clean

NAME = "gqa"
DEFAULT_SPLIT = "testdev_balanced"


def _questions(data_dir: str | Path, options: BenchmarkOptions) -> tuple[Path, dict]:
    split = options.split or DEFAULT_SPLIT
    path = find_file(data_dir, [f"{split}_questions.json", f"questions/{split}_questions.json"], "GQA questions")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping question_id -> question")
    return path, data


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    path, data = _questions(data_dir, options)
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / "images"
    samples = []
    for qid, q in data.items():
        question = require(q, "question", f"{path} [{qid}]")
        samples.append(VQASample(
            question_id=qid, image=str(image_dir / f"{require(q, 'imageId', f'{path} [{qid}]')}.jpg"),
            prompt=with_suffix(question, options.short_answer_suffix), question=question,
            answer=q.get("answer")))
    return samples


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    path, data = _questions(data_dir, options)
    items = restrict(list(data.items()), lambda kv: str(kv[0]), only)
    missing_predictions([str(k) for k, _ in items], predictions, NAME)
    rows = [(gqa_clean(predictions[str(k)]), require(q, "answer", f"{path} [{k}]"), q.get("types", {}))
            for k, q in items]
    out = {"benchmark": NAME, "accuracy": exact_match_accuracy((p, a) for p, a, _ in rows),
           "num_questions": len(rows)}
    for kind in ("structural", "semantic"):
        groups: dict[str, list[tuple[str, str]]] = {}
        for p, a, types in rows:
            if types.get(kind) is not None:
                groups.setdefault(types[kind], []).append((p, a))
        if groups:
            out[kind] = {k: exact_match_accuracy(v) for k, v in sorted(groups.items())}
    return out
