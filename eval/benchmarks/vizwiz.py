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

Scoring matches VizWiz's own ``VQAEval`` (Qing Li's VizWiz API, Python 3):
``none`` on the raw answer, ``llava`` after EvalAI's processor (LLaVA's
``convert_vizwiz_for_submission.py``), ``lmms`` as lmms-eval's
``vizwiz_vqa_process_results``; see :mod:`unified_ar.eval.vqa_accuracy`.
Percentages use Python 3 ``round(x, 2)`` (``lmms``: the plain mean).

Predictions files (:func:`read_answers`): the official ``[{"image", "answer"}]``,
our ``predictions.jsonl`` (``question_id`` = image name), or LLaVA's answer file
from ``model_vqa_loader.py``, whose ``question_id`` is the running index of
LLaVA's question file (``llava_test.jsonl``, written in the annotation file's
order), so index ``n`` is row ``n`` of ``{split}.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Collection

from unified_ar.eval.answer_processing import evalai_process
from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_json, require, restrict,
)
from unified_ar.eval.predictions import read_prediction_rows
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
        where = f"{path} {r['image']}"
        gts = [require(a, "answer", f"{where} answers") for a in require(r, "answers", where)]
        acc = vizwiz_question_accuracy(predictions[r["image"]], gts, options.answer_processing)
        scored.append((acc, None, r.get("answer_type")))
    result = aggregate(scored, "none" if options.answer_processing == "lmms" else "python3").to_dict()
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


def read_answers(path: Path, data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> dict[str, str]:
    """Predictions keyed by image name from any VizWiz predictions file (module docstring)."""
    ann_path, rows = _data(data_dir, options)
    images = [require(r, "image", f"{ann_path} [{n}]") for n, r in enumerate(rows)]
    known = set(images)
    content = read_prediction_rows(path)
    if isinstance(content, dict):
        content = [{"image": k, "answer": v} for k, v in content.items()]
    if not isinstance(content, list):
        raise ValueError(f"{path}: expected a list of predictions")
    out: dict[str, str] = {}
    for n, row in enumerate(content, 1):
        where = f"{path}:{n}" if path.suffix == ".jsonl" else f"{path} entry {n - 1}"
        image, answer = _image_and_answer(row, where, images, known, ann_path)
        if image in out and out[image] != answer:
            raise ValueError(f"{where}: image {image} has two different answers")
        out[image] = answer
    return out


def _image_and_answer(row, where: str, images: list[str], known: set[str], ann_path: Path) -> tuple[str, str]:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a prediction must be an object")
    answer = next((row[k] for k in ("answer", "text") if k in row), None)
    if not isinstance(answer, str):
        raise ValueError(f"{where}: needs a string 'answer' (or 'text')")
    if "image" in row:
        key = row["image"]
    elif "question_id" in row:
        key = row["question_id"]
    else:
        raise ValueError(f"{where}: needs 'image' or 'question_id'")
    if isinstance(key, str) and key in known:
        return key, answer
    if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(images):
        return images[key], answer  # LLaVA's running question id
    raise ValueError(f"{where}: id {key!r} is neither an image of {ann_path} nor a row index 0..{len(images) - 1}")
