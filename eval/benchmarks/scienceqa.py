"""ScienceQA-IMG (test split, questions with an image), scored as LLaVA's ``eval_science_qa.py``.

Files: ``problems.json`` and ``pid_splits.json`` (ScienceQA's ``data/scienceqa``),
images ``images/{split}/{pid}/{image}``. The prompt follows LLaVA's
``llava_test_CQM-A.json``: ``Context: {hint}`` (when there is a hint), the
question, ``A. ...`` option lines, the multiple-choice suffix. Answers are read
with LLaVA's letter rule; unreadable answers count wrong (LLaVA's "FAILED").
Accuracy is over the image questions, LLaVA's "IMG-Accuracy".
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    OPTION_LETTERS, BenchmarkOptions, VQASample, find_file, missing_predictions, options_block, read_json,
    require, restrict, with_suffix,
)
from unified_ar.eval.metrics import extract_choice

NAME = "scienceqa"
DEFAULT_SPLIT = "test"


def _problems(data_dir: str | Path, options: BenchmarkOptions) -> list[tuple[str, dict]]:
    split = options.split or DEFAULT_SPLIT
    splits = read_json(find_file(data_dir, ["pid_splits.json"], "ScienceQA pid_splits"))
    problems = read_json(find_file(data_dir, ["problems.json"], "ScienceQA problems"))
    if split not in splits:
        raise KeyError(f"{data_dir}/pid_splits.json: no split {split!r} (have {', '.join(splits)})")
    out = []
    for pid in splits[split]:
        prob = require(problems, pid, f"{data_dir}/problems.json")
        if prob.get("image"):
            out.append((pid, prob))
    return out


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    split = options.split or DEFAULT_SPLIT
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / "images" / split
    samples = []
    for pid, prob in _problems(data_dir, options):
        choices = require(prob, "choices", f"problems.json [{pid}]")
        text = f"{prob['question']}\n{options_block(choices)}"
        if prob.get("hint"):
            text = f"Context: {prob['hint']}\n{text}"
        samples.append(VQASample(question_id=pid, image=str(image_dir / pid / prob["image"]),
                                 prompt=with_suffix(text, options.multiple_choice_suffix), question=prob["question"],
                                 answer=OPTION_LETTERS[prob["answer"]], choices=choices))
    return samples


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    problems = restrict(_problems(data_dir, options), lambda p: p[0], only)
    missing_predictions([pid for pid, _ in problems], predictions, NAME)
    hits = [extract_choice(predictions[pid], len(prob["choices"])) == prob["answer"] for pid, prob in problems]
    return {"benchmark": NAME, "img_accuracy": 100 * sum(hits) / len(hits), "correct": sum(hits),
            "num_questions": len(hits)}
