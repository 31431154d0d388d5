"""SEED-Bench (image questions), scored as LLaVA's ``convert_seed_for_submission.py``.

Files: ``SEED-Bench.json`` (``questions`` with ``question_id, data_id, data_type,
question, choice_a..choice_d, answer, question_type_id``; ``question_type``
name -> id); images ``SEED-Bench-image/{data_id}``. Only ``data_type ==
"image"`` questions are asked. Prompt: the question, ``A. ...`` lines, the
multiple-choice suffix. A prediction is right when the answer as written
equals the answer letter (LLaVA's ``row['text'] == answer``: ``"A."``, ``" A"``,
``"a"`` are wrong). ``image_accuracy`` is its "image accuracy"
(``eval_only_type='image'``), ``per_type`` its per-type accuracy for the image
types (ids 1-9; video questions are not asked here). Answer files: LLaVA's
(``{"question_id", "text"}``, ids as int or string) or the upload file
(``{"question_id", "prediction"}``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, options_block, read_json, require, restrict,
    with_suffix,
)

NAME = "seedbench"


def _data(data_dir: str | Path) -> tuple[list[dict], dict[int, str]]:
    path = find_file(data_dir, ["SEED-Bench.json"], "SEED-Bench questions")
    data = read_json(path)
    names = {int(v): k for k, v in require(data, "question_type", str(path)).items()}
    questions = [q for q in require(data, "questions", str(path)) if q.get("data_type") == "image"]
    return questions, names


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    questions, _ = _data(data_dir)
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / "SEED-Bench-image"
    out = []
    for q in questions:
        choices = [require(q, f"choice_{c}", f"SEED-Bench question {q.get('question_id')}") for c in "abcd"]
        text = f"{q['question']}\n{options_block(choices)}"
        out.append(VQASample(question_id=q["question_id"], image=str(image_dir / q["data_id"]),
                             prompt=with_suffix(text, options.multiple_choice_suffix), question=q["question"],
                             answer=q["answer"], choices=choices, category=str(q.get("question_type_id"))))
    return out


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    questions, names = _data(data_dir)
    questions = restrict(questions, lambda q: str(q["question_id"]), only)
    missing_predictions([str(q["question_id"]) for q in questions], predictions, NAME)
    per: dict[int, list[bool]] = {}
    for q in questions:
        per.setdefault(int(q["question_type_id"]), []).append(predictions[str(q["question_id"])] == q["answer"])
    total = [h for hits in per.values() for h in hits]
    return {"benchmark": NAME, "image_accuracy": sum(total) / len(total) * 100, "num_questions": len(total),
            "per_type": {names.get(t, str(t)): sum(h) / len(h) * 100 for t, h in sorted(per.items())},
            "per_type_counts": {names.get(t, str(t)): len(h) for t, h in sorted(per.items())}}
