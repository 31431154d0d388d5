"""MMBench (TSV with base64 images), circular evaluation.

File: ``mmbench_dev_20230712.tsv`` by default (``--split`` picks
``mmbench_{split}.tsv`` or ``{split}.tsv``), columns ``index, question, hint,
A..D, answer, category, [l2-category], image``. If the TSV already holds the
circular copies (indices >= 1e6, the legacy release), they are asked as they
are; otherwise, with ``circular`` on, each question is asked once per rotation
of its options (LLaVA ``model_vqa_mmbench.py --all-rounds``), rotation ``r``
getting index ``index + r * 1e6`` so that ``index % 1e6`` names the question,
as OpenCompass groups them (LLaVA's rotation: round ``r`` lists
``options[r:] + options[:r]`` under the letters A, B, ...). The prompt is
LLaVA's: hint, question, ``A. ...`` lines, the multiple-choice suffix.

Scoring follows VLMEvalKit's exact matching (``judge`` ``exact_matching``, no
ChatGPT): each row's answer is read with ``can_infer`` against that row's
options (:func:`unified_ar.eval.metrics.mmbench_infer`); an answer it cannot
read, or reads as ``"Z"``, is wrong; a question is right when all its rows are
(``mcq_circular_eval``). The TSV is read as text: no image is decoded.

Answer files: ours / any ``{"question_id": index, "text"}`` keyed by the
asked index, and LLaVA's ``model_vqa_mmbench.py`` answer file, whose
``question_id`` is the TSV's index and ``round_id`` the rotation
(key ``index + round_id * 1e6``).
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
from unified_ar.eval.metrics import CIRCULAR_STRIDE, circular_accuracy, mmbench_infer
from unified_ar.eval.predictions import read_prediction_rows

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
        choices = dict(zip(OPTION_LETTERS, r["options"]))
        hit = mmbench_infer(predictions[str(r["index"])], choices) == OPTION_LETTERS[r["answer_idx"]]
        groups = {k: r.get(k) for k in ("category", "l2-category") if not _is_none(r.get(k))}
        rows.append((r["index"], hit, groups))
    return {"benchmark": NAME, **circular_accuracy(rows)}


def _answer_key(row, where: str, has_copies: bool) -> str:
    if not isinstance(row, dict) or "question_id" not in row or "text" not in row:
        raise ValueError(f"{where}: an answer needs 'question_id' and 'text'")
    rnd = row.get("round_id", 0)
    if not isinstance(rnd, int) or rnd < 0:
        raise ValueError(f"{where}: round_id must be an integer >= 0, got {rnd!r}")
    if rnd and has_copies:
        raise ValueError(f"{where}: round_id {rnd}, but the TSV already holds the circular copies "
                         "(answer it without --all-rounds)")
    if not str(row["question_id"]).isdigit():
        raise ValueError(f"{where}: question_id must be the TSV's integer index, got {row['question_id']!r}")
    return str(int(row["question_id"]) + rnd * CIRCULAR_STRIDE)


def read_answers(path: Path, data_dir, options: BenchmarkOptions) -> dict[str, str]:
    """Rows ``{"question_id", "text"[, "round_id"]}`` (JSONL or a JSON list), or a
    mapping index -> answer; LLaVA's ``round_id`` r keys ``index + r * 1e6``."""
    rows = read_prediction_rows(path)
    if isinstance(rows, dict):
        return {str(k): str(v) for k, v in rows.items()}
    has_copies = any(int(r["index"]) >= CIRCULAR_STRIDE for r in _read_tsv(_tsv(data_dir, options)))
    out: dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        where = f"{path}:{n}" if path.suffix == ".jsonl" else f"{path} entry {n - 1}"
        key = _answer_key(row, where, has_copies)
        if key in out and out[key] != str(row["text"]):
            raise ValueError(f"{where}: question {key} has two different answers")
        out[key] = str(row["text"])
    return out
