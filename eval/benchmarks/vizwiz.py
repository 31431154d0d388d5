"""VizWiz-VQA, scored as the official VizWiz ``VQAEval`` does.

Files: ``{split}.json`` (default ``val``; a list of ``{image, question, answers:
[{answer, answer_confidence}], answer_type, answerable}``) under ``data_dir`` or
``data_dir/Annotations``; images ``{split}/{image}``. The image name is the
question id, as in the official tools. The prompt is LLaVA-1.5's: the question,
"When the provided information is insufficient, respond with 'Unanswerable'.",
and the short-answer suffix. Unanswerable questions are scored like any other:
their human answers are "unanswerable" and their answer type is
"unanswerable". The official unanswerability AP/F1 needs a per-question
answerable probability, which a generative model does not give; not reported.
Test splits: :func:`write_submission` writes ``[{"image", "answer"}]``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Collection

from unified_ar.eval.answer_processing import evalai_process
from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_json, require, restrict,
)
from unified_ar.eval.vqa_accuracy import aggregate, vizwiz_question_accuracy

NAME = "vizwiz"
DEFAULT_SPLIT = "val"


def _data(data_dir: str | Path, options: BenchmarkOptions) -> tuple[Path, list[dict]]:
    split = options.split or DEFAULT_SPLIT
    path = find_file(data_dir, [f"{split}.json", f"Annotations/{split}.json"], "VizWiz annotations")
    rows = read_json(path)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of questions")
    return path, rows


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    path, rows = _data(data_dir, options)
    split = options.split or DEFAULT_SPLIT
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / split
    suffix = "\n".join(s for s in (options.unanswerable_prefix, options.short_answer_suffix) if s)
    out = []
    for n, r in enumerate(rows):
        image = require(r, "image", f"{path} [{n}]")
        question = require(r, "question", f"{path} [{n}]")
        out.append(VQASample(question_id=image, image=str(image_dir / image),
                             prompt=f"{question}\n{suffix}" if suffix else question, question=question))
    return out


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    path, rows = _data(data_dir, options)
    rows = restrict(rows, lambda r: str(r["image"]), only)
    missing_predictions([r["image"] for r in rows], predictions, NAME)
    scored = []
    for r in rows:
        gts = [a["answer"] for a in require(r, "answers", f"{path} {r['image']}")]
        acc = vizwiz_question_accuracy(predictions[r["image"]], gts, options.answer_processing)
        scored.append((acc, None, r.get("answer_type")))
    result = aggregate(scored).to_dict()
    result.pop("perQuestionType")
    return {"benchmark": NAME, "answer_processing": options.answer_processing, **result}


def write_submission(predictions: dict[str, str], data_dir: str | Path, out: str | Path,
                     options: BenchmarkOptions = BenchmarkOptions()) -> dict:
    """``[{"image", "answer"}]`` with EvalAI-processed answers (LLaVA's converter)."""
    _, rows = _data(data_dir, options)
    missing_predictions([r["image"] for r in rows], predictions, NAME)
    upload = [{"image": r["image"], "answer": evalai_process(predictions[r["image"]])} for r in rows]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(upload))
    return {"submission": str(out), "questions": len(upload)}
