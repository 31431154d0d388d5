"""VQAv2 (and any data in its official format, e.g. the Shapes world's ``vqa/``).

Scored as GT-Vision-Lab ``vqaEval.py`` + ``vqaTools/vqa.py`` do (``none``), after
LLaVA's EvalAI processing (``llava``), or as lmms-eval's ``vqav2_process_results``
(``lmms``): see :mod:`unified_ar.eval.vqa_accuracy`.

Files (``--split S``, default ``val2014``), the first that exists:
``v2_OpenEnded_mscoco_{S}_questions.json`` / ``v2_mscoco_{S}_annotations.json``,
``vqa/{S}_questions.json`` / ``vqa/{S}_annotations.json``,
``{S}_questions.json`` / ``{S}_annotations.json``.
Images: COCO ``{S}/COCO_{S}_{image_id:012d}.jpg``; for the Shapes world
(``data_type == "shapes"``) ``images/{S}/{S}_{image_id:08d}.png``.
Test splits have no annotations: write the EvalAI submission with
:func:`write_submission` instead of scoring.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Collection

from unified_ar.eval.answer_processing import evalai_process
from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_json, require, restrict,
    with_suffix,
)
from unified_ar.eval.vqa_accuracy import aggregate, vqa_question_accuracy

NAME = "vqav2"
DEFAULT_SPLIT = "val2014"


def _split(options: BenchmarkOptions) -> str:
    return options.split or DEFAULT_SPLIT


def questions_file(data_dir: str | Path, split: str) -> Path:
    return find_file(data_dir, [f"v2_OpenEnded_mscoco_{split}_questions.json",
                                f"vqa/{split}_questions.json", f"{split}_questions.json"], "VQAv2 questions")


def annotations_file(data_dir: str | Path, split: str) -> Path:
    return find_file(data_dir, [f"v2_mscoco_{split}_annotations.json",
                                f"vqa/{split}_annotations.json", f"{split}_annotations.json"],
                     "VQAv2 annotations (test splits have none: use --submission)")


def _image_path(data_dir: Path, head: dict, image_id: int, split: str, options: BenchmarkOptions) -> str:
    if head.get("data_type") == "shapes":
        rel = f"{split}/{split}_{image_id:08d}.png"
        return str(Path(options.image_dir) / rel if options.image_dir else data_dir / "images" / rel)
    subtype = head.get("data_subtype", split)
    name = f"COCO_{subtype}_{image_id:012d}.jpg"
    return str(Path(options.image_dir) / name if options.image_dir else data_dir / subtype / name)


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    """One sample per question, prompt = question + the short-answer suffix."""
    split = _split(options)
    path = questions_file(data_dir, split)
    data = read_json(path)
    samples = []
    for n, q in enumerate(require(data, "questions", str(path))):
        where = f"{path} questions[{n}]"
        question = require(q, "question", where)
        samples.append(VQASample(
            question_id=require(q, "question_id", where),
            image=_image_path(Path(data_dir), data, require(q, "image_id", where), split, options),
            prompt=with_suffix(question, options.short_answer_suffix), question=question))
    return samples


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    """vqaEval.py accuracy: overall, per answer type and per question type (percent).

    ``only``: score just these question ids (a ``--limit`` run)."""
    path = annotations_file(data_dir, _split(options))
    anns = require(read_json(path), "annotations", str(path))
    anns = restrict(anns, lambda a: str(a["question_id"]), only)
    keys = [str(a["question_id"]) for a in anns]
    missing_predictions(keys, predictions, NAME)
    extra = set(predictions) - set(keys)
    if extra:
        raise ValueError(f"{NAME}: {len(extra)} predictions for questions not in {path} (e.g. {sorted(extra)[0]})")
    rows = []
    for key, ann in zip(keys, anns):
        records = require(ann, "answers", f"{path} question {key}")
        gts = [require(a, "answer", f"{path} question {key} answers") for a in records]
        acc = vqa_question_accuracy(_answer_text(predictions[key], key), gts, options.answer_processing, records)
        rows.append((acc, ann.get("question_type"), ann.get("answer_type")))
    rounding = "none" if options.answer_processing == "lmms" else "python2"
    result = aggregate(rows, rounding).to_dict()
    return {"benchmark": NAME, "answer_processing": options.answer_processing, **result}


def _answer_text(answer, key: str) -> str:
    if not isinstance(answer, str):
        raise ValueError(f"{NAME}: the prediction of question {key} is not a string: {answer!r}")
    return answer


def write_submission(predictions: dict[str, str], questions_path: str | Path, out: str | Path) -> dict:
    """EvalAI upload ``[{"question_id", "answer"}]`` for every question in ``questions_path``.

    As LLaVA's ``convert_vqav2_for_submission.py``: answers pass EvalAI's
    processor, questions without a prediction get ``""`` (test-dev runs answer a
    subset of the test2015 questions the server expects); the count is returned."""
    data = read_json(Path(questions_path))
    rows, missing = [], 0
    for q in require(data, "questions", str(questions_path)):
        key = str(q["question_id"])
        missing += key not in predictions
        rows.append({"question_id": q["question_id"], "answer": evalai_process(predictions.get(key, ""))
                     if key in predictions else ""})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(rows))
    return {"submission": str(out), "questions": len(rows), "without_prediction": missing}
