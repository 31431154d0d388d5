"""ScienceQA-IMG (test split, questions with an image), scored as LLaVA's ``eval_science_qa.py``.

Files: ``problems.json`` and ``pid_splits.json`` (ScienceQA's ``data/scienceqa``),
images ``images/{split}/{pid}/{image}``. The prompt follows LLaVA's
``llava_test_CQM-A.json``: ``Context: {hint}`` (when there is a hint), the
question, ``A. ...`` option lines, the multiple-choice suffix. Answers are read
as written with LLaVA's letter rule (:func:`unified_ar.eval.metrics.extract_choice`);
unreadable answers count wrong (LLaVA's "FAILED").

``img_accuracy`` is LLaVA's "IMG-Accuracy", over the split's questions with an
image (eval_science_qa.py takes those whose answer-file prompt holds
``<image>``, which LLaVA's question file gives exactly the problems with an
``image``). When the answers also cover every other question of the split,
``accuracy`` is LLaVA's "Accuracy" over all of them. LLaVA's answer file
(``{"question_id": pid, "prompt", "text"}``) is read as it is.
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


def _split_problems(data_dir: str | Path, options: BenchmarkOptions) -> list[tuple[str, dict]]:
    split = options.split or DEFAULT_SPLIT
    splits = read_json(find_file(data_dir, ["pid_splits.json"], "ScienceQA pid_splits"))
    problems = read_json(find_file(data_dir, ["problems.json"], "ScienceQA problems"))
    if split not in splits:
        raise KeyError(f"{data_dir}/pid_splits.json: no split {split!r} (have {', '.join(splits)})")
    return [(pid, require(problems, pid, f"{data_dir}/problems.json")) for pid in splits[split]]


def _problems(data_dir: str | Path, options: BenchmarkOptions) -> list[tuple[str, dict]]:
    """The split's questions with an image (the ones asked)."""
    return [(pid, prob) for pid, prob in _split_problems(data_dir, options) if prob.get("image")]


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


def _hit(text: str, prob: dict, pid: str) -> bool:
    return extract_choice(text, len(require(prob, "choices", f"problems.json [{pid}]"))) == \
        require(prob, "answer", f"problems.json [{pid}]")


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    problems = restrict(_problems(data_dir, options), lambda p: p[0], only)
    missing_predictions([pid for pid, _ in problems], predictions, NAME)
    hits = [_hit(predictions[pid], prob, pid) for pid, prob in problems]
    out = {"benchmark": NAME, "img_accuracy": sum(hits) / len(hits) * 100, "correct": sum(hits),
           "num_questions": len(hits)}
    every = _split_problems(data_dir, options)
    if only is None and all(pid in predictions for pid, _ in every):
        all_hits = [_hit(predictions[pid], prob, pid) for pid, prob in every]
        out.update(accuracy=sum(all_hits) / len(all_hits) * 100, all_correct=sum(all_hits),
                   all_questions=len(all_hits))
    return out
