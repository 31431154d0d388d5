"""TextVQA val (v0.5.1), scored with LLaVA's ``TextVQAAccuracyEvaluator``.

Files: ``TextVQA_0.5.1_val.json`` (``{"data": [{question_id, image_id, question,
answers}]}``; ``--split`` picks ``TextVQA_0.5.1_{split}.json``); images
``train_images/{image_id}.jpg`` (TextVQA's val images live there). LLaVA-1.5
appends Rosetta OCR tokens to the prompt ("Reference OCR token: ..."); we ask
the question with the short-answer suffix only, since the OCR file is a separate
download; published LLaVA TextVQA numbers use OCR tokens.

Scoring: ``llava`` is LLaVA ``llava/eval/eval_textvqa.py`` + ``m4c_evaluator.py``
``TextVQAAccuracyEvaluator`` (EvalAI processing of the prediction and of all ten
human answers). That evaluator processes the raw answer itself, so ``none`` (the
official scorer on the raw answer) is the same computation. ``lmms`` is lmms-eval's
``textvqa_process_results`` (same processing, per-question ``statistics.mean``).
``accuracy`` is 100 x the mean, unrounded (LLaVA prints it with two decimals).

Predictions files (:func:`read_answers`): ``[{"question_id", "answer"}]``, our
``predictions.jsonl``, or LLaVA's answer file (``llava_textvqa_val_v051_ocr.jsonl``
answers), whose ``question_id`` is the *image* id; as ``eval_textvqa.py`` does, such
a line is matched on (image id, lower-cased question taken from its ``prompt``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_json, require, restrict, with_suffix,
)
from unified_ar.eval.predictions import read_prediction_rows
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
    accs = []
    for r in rows:
        key = str(r["question_id"])
        answers = require(r, "answers", f"{path} question {key}")
        if options.answer_processing != "lmms" and len(answers) != 10:
            raise ValueError(f"{path} question {key}: TextVQAAccuracyEvaluator needs 10 answers, got {len(answers)}")
        accs.append(textvqa_question_accuracy(predictions[key], answers, options.answer_processing))
    # LLaVA prints 100. * (sum / len) with two decimals; we keep the unrounded value.
    return {"benchmark": NAME, "answer_processing": options.answer_processing,
            "accuracy": 100.0 * (sum(accs) / len(accs)), "num_questions": len(accs)}


def prompt_question(prompt: str) -> str | None:
    """The question inside a LLaVA TextVQA prompt, lower-cased (``eval_textvqa.py``'s
    ``prompt_processor``); None for a prompt of none of its three shapes."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        found = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        return found.group(1).lower() if found else None
    if "Reference OCR token: " in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith("Reference OCR token:") else lines[0]).lower()
    if len(lines) == 2:
        return lines[0].lower()
    return None


def read_answers(path: Path, data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> dict[str, str]:
    """Predictions keyed by ``str(question_id)`` from any TextVQA predictions file (module docstring).

    Several questions of one image asking the same (lower-cased) question are
    given to LLaVA-style lines in file order."""
    index = _Index(*_data(data_dir, options))
    content = read_prediction_rows(path)
    if isinstance(content, dict):
        content = [{"question_id": k, "answer": v} for k, v in content.items()]
    if not isinstance(content, list):
        raise ValueError(f"{path}: expected a list of predictions")
    out: dict[str, str] = {}
    for n, row in enumerate(content, 1):
        where = f"{path}:{n}" if path.suffix == ".jsonl" else f"{path} entry {n - 1}"
        key, answer = index.key_and_answer(row, where)
        if key in out and out[key] != answer:
            raise ValueError(f"{where}: question {key} has two different answers")
        out[key] = answer
    return out


class _Index:
    """The annotation file's question ids, image ids and (image id, lower-cased question) pairs."""

    def __init__(self, path: Path, rows: list[dict]):
        self.path = path
        self.qids: set[str] = set()
        self.images: set[str] = set()
        self.pending: dict[tuple[str, str], list[str]] = {}
        for n, r in enumerate(rows):
            where = f"{path} data[{n}]"
            qid, image = str(require(r, "question_id", where)), str(require(r, "image_id", where))
            self.qids.add(qid)
            self.images.add(image)
            self.pending.setdefault((image, require(r, "question", where).lower()), []).append(qid)

    def key_and_answer(self, row, where: str) -> tuple[str, str]:
        if not isinstance(row, dict) or "question_id" not in row:
            raise ValueError(f"{where}: a prediction needs 'question_id'")
        answer = next((row[k] for k in ("answer", "text") if k in row), None)
        if not isinstance(answer, str):
            raise ValueError(f"{where}: needs a string 'answer' (or 'text')")
        qid = str(row["question_id"])
        if qid in self.qids:
            return qid, answer
        if qid not in self.images:
            raise ValueError(f"{where}: id {qid!r} is neither a question_id nor an image_id of {self.path}")
        question = prompt_question(row["prompt"]) if isinstance(row.get("prompt"), str) else None
        if question is None:
            raise ValueError(f"{where}: image id {qid!r} needs a LLaVA 'prompt' holding the question")
        candidates = self.pending.get((qid, question))
        if not candidates:
            raise ValueError(f"{where}: image {qid!r} has no (further) question {question!r} in {self.path}")
        return candidates.pop(0), answer
