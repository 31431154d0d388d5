"""TextVQA val (v0.5.1), scored with LLaVA's ``TextVQAAccuracyEvaluator``.

Files: ``TextVQA_0.5.1_val.json`` (``{"data": [{question_id, image_id, question,
answers}]}``; ``--split`` picks ``TextVQA_0.5.1_{split}.json``); images
``train_images/{image_id}.jpg`` (TextVQA's val images live there). LLaVA-1.5
appends Rosetta OCR tokens to the prompt ("Reference OCR token: ..."); we ask
the question with the short-answer suffix only, since the OCR file is a separate
download; published LLaVA TextVQA numbers use OCR tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_json, require, restrict, with_suffix,
)
from unified_ar.eval.vqa_accuracy import textvqa_question_accuracy

NAME = "textvqa"
DEFAULT_SPLIT = "val"


def _data(data_dir: str | Path, options: BenchmarkOptions) -> tuple[Path, list[dict]]:
    split = options.split or DEFAULT_SPLIT
    path = find_file(data_dir, [f"TextVQA_0.5.1_{split}.json"], "TextVQA annotations")
    return path, require(read_json(path), "data", str(path))


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    path, rows = _data(data_dir, options)
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / "train_images"
    out = []
    for n, r in enumerate(rows):
        where = f"{path} data[{n}]"
        question = require(r, "question", where)
        out.append(VQASample(question_id=require(r, "question_id", where),
                             image=str(image_dir / f"{require(r, 'image_id', where)}.jpg"),
                             prompt=with_suffix(question, options.short_answer_suffix), question=question))
    return out


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    path, rows = _data(data_dir, options)
    rows = restrict(rows, lambda r: str(r["question_id"]), only)
    missing_predictions([str(r["question_id"]) for r in rows], predictions, NAME)
    accs = [textvqa_question_accuracy(predictions[str(r["question_id"])], r["answers"], options.answer_processing)
            for r in rows]
    # LLaVA prints 100 * mean with two decimals; we keep the unrounded value.
    return {"benchmark": NAME, "answer_processing": options.answer_processing,
            "accuracy": 100.0 * sum(accs) / len(accs), "num_questions": len(accs)}
