"""MMBench (TSV with base64 images), circular evaluation.

File: ``mmbench_dev_20230712.tsv`` by default (``--split`` picks
``mmbench_{split}.tsv`` or ``{split}.tsv``), columns ``index, question, hint,
A..D, answer, category, [l2-category], image``. If the TSV already holds the
circular copies (indices >= 1e6, the legacy release), they are asked as they
are; otherwise, with ``circular`` on, each question is asked once per rotation
of its options (LLaVA ``model_vqa_mmbench.py --all-rounds``), rotation ``r``
getting index ``index + r * 1e6`` so that ``index % 1e6`` names the question,
as OpenCompass groups them. The prompt is LLaVA's: hint, question, ``A. ...``
lines, the multiple-choice suffix. Letters are read with LLaVA's rule
(:func:`unified_ar.eval.metrics.extract_choice`); the official server adds
ChatGPT matching for free-form answers, which we do not.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    OPTION_LETTERS, BenchmarkOptions, VQASample, base64_image, find_file, missing_predictions, options_block,
    require, restrict, with_suffix,
)
from unified_ar.eval.metrics import CIRCULAR_STRIDE, circular_accuracy, extract_choice

NAME = "mmbench"
DEFAULT_SPLIT = "dev_20230712"


def _is_none(value: str | None) -> bool:
    """LLaVA's ``is_none``: empty / NaN / "nan" / "none" cells mean no value."""
    return value is None or value.strip() == "" or value.strip().lower() in ("nan", "none")


def _read_tsv(path: Path) -> list[dict]:
    csv.field_size_limit(sys.maxsize)  # base64 images exceed the default 128 KiB cell limit
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for n, r in enumerate(rows):
        for key in ("index", "question", "answer", "A", "B"):
            require(r, key, f"{path} row {n + 2}")
    return rows


def _tsv(data_dir: str | Path, options: BenchmarkOptions) -> Path:
    split = options.split or DEFAULT_SPLIT
    return find_file(data_dir, [f"mmbench_{split}.tsv", f"{split}.tsv"], "MMBench TSV")


def _expand(rows: list[dict], circular: bool) -> list[dict]:
    """Rows to ask: the TSV's own, or each question with its options rotated."""
    has_copies = any(int(r["index"]) >= CIRCULAR_STRIDE for r in rows)
    out = []
    for r in rows:
        options = []
        for letter in OPTION_LETTERS[:4]:
            if _is_none(r.get(letter)):
                break
            options.append(r[letter])
        answer = OPTION_LETTERS.index(r["answer"].strip())
        rounds = len(options) if circular and not has_copies else 1
        for k in range(rounds):
            out.append({**r, "index": int(r["index"]) + k * CIRCULAR_STRIDE,
                        "options": options[k:] + options[:k], "answer_idx": (answer - k) % len(options)})
    return out


def _asked(data_dir: str | Path, options: BenchmarkOptions) -> list[dict]:
    return _expand(_read_tsv(_tsv(data_dir, options)), options.circular)


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    samples = []
    for r in _asked(data_dir, options):
        question = r["question"] if _is_none(r.get("hint")) else f"{r['hint']}\n{r['question']}"
        text = f"{question}\n{options_block(r['options'])}"
        samples.append(VQASample(
            question_id=r["index"], image=base64_image(r["image"]) if not _is_none(r.get("image")) else None,
            prompt=with_suffix(text, options.multiple_choice_suffix), question=r["question"],
            answer=OPTION_LETTERS[r["answer_idx"]], category=r.get("category"), choices=r["options"]))
    return samples


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    asked = restrict(_asked(data_dir, options), lambda r: str(r["index"]), only)
    missing_predictions([str(r["index"]) for r in asked], predictions, NAME)
    rows = []
    for r in asked:
        hit = extract_choice(predictions[str(r["index"])], len(r["options"]), OPTION_LETTERS[:4]) == r["answer_idx"]
        groups = {k: r.get(k) for k in ("category", "l2-category") if not _is_none(r.get(k))}
        rows.append((r["index"], hit, groups))
    return {"benchmark": NAME, **circular_accuracy(rows)}


