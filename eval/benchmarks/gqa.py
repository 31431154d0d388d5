"""GQA (test-dev balanced by default), scored as the official GQA ``eval.py`` does.

Files: ``{split}_questions.json`` (default ``testdev_balanced``; also under
``questions/``), a mapping ``question_id -> {imageId, question, answer,
isBalanced, types, semantic, groups, entailed, ...}``; optionally
``{split}_choices.json`` (validity / plausibility); images ``images/{imageId}.jpg``.

Answers: a file in GQA's own results format ``[{"questionId", "prediction"}]``
is compared as written (eval.py does no cleaning: ``"yes "`` and ``"Yes"`` are
wrong); LLaVA-style answers (``{"question_id", "text"}`` JSONL, our own run's
answers, a JSON mapping id -> answer) first go through LLaVA's
``convert_gqa_for_eval.py`` cleaning (``rstrip('.')``, lower-case).

Figures, all over the ``isBalanced`` questions only, as eval.py computes them:
accuracy, binary / open (open = structural type ``query``), accuracy per
structural type, semantic type, reasoning steps and question words (with
counts), the answer-distribution chi-square / 100; validity and plausibility
when the choices file is there (else ``None``; eval.py prints 0.00 then);
consistency (eval.py ``--consistency``) when every question of the file has a
prediction and every entailed question is in the file (else ``None``).
Grounding needs scene graphs and attention maps: not computed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_json, require, restrict, with_suffix,
)
from unified_ar.eval.metrics import gqa_chi_square, gqa_clean, gqa_steps, percent
from unified_ar.eval.predictions import read_prediction_rows

NAME = "gqa"
DEFAULT_SPLIT = "testdev_balanced"
COMMON_GROUP = ["color", "material", "shape"]  # eval.py ``belongs`` for "Common" questions


class AsWritten(dict):
    """Predictions read from GQA's own results format: :func:`score` compares them uncleaned."""


def _split(options: BenchmarkOptions) -> str:
    return options.split or DEFAULT_SPLIT


def _questions(data_dir: str | Path, options: BenchmarkOptions) -> tuple[Path, dict]:
    split = _split(options)
    path = find_file(data_dir, [f"{split}_questions.json", f"questions/{split}_questions.json"], "GQA questions")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping question_id -> question")
    return path, data


def _choices(data_dir: str | Path, options: BenchmarkOptions) -> tuple[Path, dict] | None:
    split = _split(options)
    for rel in (f"{split}_choices.json", f"questions/{split}_choices.json"):
        if (Path(data_dir) / rel).is_file():
            return Path(data_dir) / rel, read_json(Path(data_dir) / rel)
    return None


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    path, data = _questions(data_dir, options)
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / "images"
    samples = []
    for qid, q in data.items():
        question = require(q, "question", f"{path} [{qid}]")
        samples.append(VQASample(
            question_id=qid, image=str(image_dir / f"{require(q, 'imageId', f'{path} [{qid}]')}.jpg"),
            prompt=with_suffix(question, options.short_answer_suffix), question=question,
            answer=q.get("answer")))
    return samples


def read_answers(path: Path, data_dir, options: BenchmarkOptions) -> dict[str, str]:
    """GQA results format (``questionId`` / ``prediction``: as written) or LLaVA-style
    rows / a mapping (raw answers, cleaned by :func:`score`); one format per file."""
    rows = read_prediction_rows(path)
    if isinstance(rows, dict):
        return {str(k): str(v) for k, v in rows.items()}
    official = bool(rows) and isinstance(rows[0], dict) and "questionId" in rows[0]
    id_key, text_key = ("questionId", "prediction") if official else ("question_id", "text")
    out: dict[str, str] = AsWritten() if official else {}
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or id_key not in row or text_key not in row:
            raise ValueError(f"{path}: entry {n} needs {id_key!r} and {text_key!r} (one format per file)")
        key, text = str(row[id_key]), str(row[text_key])
        if key in out and out[key] != text:
            raise ValueError(f"{path}: question {key} has two different answers")
        out[key] = text
    return out


def _field(q: dict, where: str, *keys: str):
    value = q
    for k in keys:
        value = require(value, k, where)
    return value


def _consistency(data: dict, preds: dict[str, str], balanced: list[tuple[str, dict, bool]]) -> float | None:
    """eval.py ``--consistency``: for each right balanced question, accuracy over its
    entailed questions (itself excluded); the mean over those that have any."""
    if any(k not in preds for k in data):
        return None
    per = []
    for qid, q, correct in balanced:
        entailed = [e for e in _field(q, f"question {qid}", "entailed") if e != qid]
        if any(e not in data for e in entailed):
            return None
        if correct and entailed:
            per.append(float(sum(preds[e] == data[e]["answer"] for e in entailed)) / len(entailed))
    return percent(per) if per else 0.0


def _belongs(pred: str, group: list, q: dict, where: str) -> bool:
    if "Common" in _field(q, where, "types", "detailed"):
        group = COMMON_GROUP
    return pred in group


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    path, data = _questions(data_dir, options)
    items = restrict(list(data.items()), lambda kv: str(kv[0]), only)
    balanced_items = [(str(k), q) for k, q in items if _field(q, f"{path} [{k}]", "isBalanced")]
    missing_predictions([k for k, _ in balanced_items], predictions, NAME)
    preds = dict(predictions) if isinstance(predictions, AsWritten) else \
        {k: gqa_clean(v) for k, v in predictions.items()}
    groups: dict[str, dict] = {kind: {} for kind in ("structural", "semantic", "steps", "words")}
    answer_types: dict[str, list[bool]] = {"binary": [], "open": []}
    gold_dist: dict[str, dict[str, int]] = {}
    pred_dist: dict[str, dict[str, int]] = {}
    balanced = []
    for qid, q in balanced_items:
        where = f"{path} [{qid}]"
        gold, pred = _field(q, where, "answer"), preds[qid]
        correct = pred == gold
        balanced.append((qid, q, correct))
        structural = _field(q, where, "types", "structural")
        for kind, value in (("structural", structural), ("semantic", _field(q, where, "types", "semantic")),
                            ("steps", gqa_steps(_field(q, where, "semantic"))),
                            ("words", len(_field(q, where, "question").split()))):
            groups[kind].setdefault(value, []).append(correct)
        answer_types["open" if structural == "query" else "binary"].append(correct)
        global_group = _field(q, where, "groups", "global")
        if global_group is not None:
            gold_dist.setdefault(global_group, {}).setdefault(gold, 0)
            gold_dist[global_group][gold] += 1
            pred_dist.setdefault(global_group, {}).setdefault(pred, 0)
            pred_dist[global_group][pred] += 1
    if not balanced:
        raise ValueError(f"{path}: no balanced question to score")
    out: dict = {"benchmark": NAME, "accuracy": percent([c for _, _, c in balanced]),
                 "binary": percent(answer_types["binary"]), "open": percent(answer_types["open"]),
                 "num_questions": len(balanced)}
    for kind, per in groups.items():
        out[kind] = {str(k): percent(v) for k, v in sorted(per.items())}
    out["counts"] = {kind: {str(k): len(v) for k, v in sorted(per.items())} for kind, per in groups.items()}
    out["distribution"] = gqa_chi_square(gold_dist, pred_dist) / 100 if gold_dist else None
    out.update(_validity(data_dir, options, balanced, preds))
    out["consistency"] = _consistency(data, preds, balanced) if only is None else None
    return out


def _validity(data_dir, options: BenchmarkOptions, balanced: list, preds: dict[str, str]) -> dict:
    found = _choices(data_dir, options)
    if found is None:
        return {"validity": None, "plausibility": None}
    path, choices = found
    out = {}
    for kind in ("valid", "plausible"):
        hits = [_belongs(preds[qid], _field(choices, f"{path}", qid, kind), q, f"question {qid}")
                for qid, q, _ in balanced]
        out["validity" if kind == "valid" else "plausibility"] = percent(hits)
    return out
