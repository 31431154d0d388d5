"""POPE (random / popular / adversarial), scored with LLaVA's ``eval_pope.py`` rules.

Files: ``coco_pope_{category}.json`` (one JSON object per line: ``question_id,
image, text, label``) under ``data_dir`` or ``data_dir/coco``; images
``val2014/{image}``. Question ids repeat across the three files, so ours are
``"{category}/{question_id}"``. Metrics per category as eval_pope.py prints them,
plus their mean (LLaVA papers quote the mean F1 / accuracy over the three).

LLaVA's answer files (``{"question_id", "prompt", "text"}`` per line, from
``llava_pope_test.jsonl``) are read by :func:`read_answers`. eval_pope.py takes
each answer's category from the question file and pairs the answers of a
category, in file order, with the lines of ``coco_pope_{category}.json``.
LLaVA's question file numbers ``adversarial`` 1..3000, ``random``
10000001..10002910 and ``popular`` 20000001..20003000, i.e. ``10_000_000 * k +
question_id`` of the coco_pope line, in that category order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import (
    BenchmarkOptions, VQASample, find_file, missing_predictions, read_jsonl, require, restrict, with_suffix,
)
from unified_ar.eval.metrics import pope_metrics
from unified_ar.eval.predictions import read_predictions

NAME = "pope"
CATEGORIES = ("random", "popular", "adversarial")
LLAVA_QUESTION_FILE = "llava_pope_test.jsonl"
LLAVA_ID_STRIDE = 10_000_000
LLAVA_CATEGORY_ORDER = ("adversarial", "random", "popular")  # LLaVA id // LLAVA_ID_STRIDE


def _files(data_dir: str | Path) -> dict[str, Path]:
    root = Path(data_dir)
    found = {c: p for c in CATEGORIES for p in (root / f"coco_pope_{c}.json", root / "coco" / f"coco_pope_{c}.json")
             if p.is_file()}
    if not found:
        find_file(data_dir, [f"coco_pope_{c}.json" for c in CATEGORIES], "POPE questions")
    return found


def _rows(data_dir: str | Path) -> list[tuple[str, dict]]:
    out = []
    for category, path in _files(data_dir).items():
        for n, r in enumerate(read_jsonl(path)):
            for key in ("question_id", "image", "text", "label"):
                require(r, key, f"{path} line {n + 1}")
            out.append((category, r))
    return out


def _key(category: str, row: dict) -> str:
    return f"{category}/{row['question_id']}"


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    image_dir = Path(options.image_dir) if options.image_dir else Path(data_dir) / "val2014"
    return [VQASample(question_id=_key(c, r), image=str(image_dir / r["image"]),
                      prompt=with_suffix(r["text"], options.short_answer_suffix), question=r["text"],
                      answer=r["label"], category=c)
            for c, r in _rows(data_dir)]


def _llava_ids_from_question_file(path: Path, rows: list[tuple[str, dict]]) -> dict[str, str]:
    """LLaVA id -> our key, joined as eval_pope.py joins: the n-th question of a
    category in the question file is the n-th line of its coco_pope file."""
    by_category: dict[str, list[dict]] = {}
    for c, r in rows:
        by_category.setdefault(c, []).append(r)
    seen = dict.fromkeys(by_category, 0)
    out = {}
    for n, q in enumerate(read_jsonl(path), 1):
        where = f"{path} entry {n}"
        category = require(q, "category", where)
        if category not in by_category:
            raise ValueError(f"{where}: category {category!r} has no coco_pope_{category}.json in the data folder")
        pos, seen[category] = seen[category], seen[category] + 1
        if pos >= len(by_category[category]):
            raise ValueError(f"{where}: more {category} questions than coco_pope_{category}.json has "
                             f"({len(by_category[category])})")
        row = by_category[category][pos]
        if q.get("image", row["image"]) != row["image"]:
            raise ValueError(f"{where}: image {q['image']} but line {pos + 1} of coco_pope_{category}.json has "
                             f"{row['image']} (LLaVA's question file goes with POPE commit e3e3926's files)")
        out[str(require(q, "question_id", where))] = _key(category, row)
    return out


def _llava_ids_by_rule(rows: list[tuple[str, dict]]) -> dict[str, str]:
    """LLaVA id -> our key without the question file: 10_000_000 * k + question_id."""
    return {str(LLAVA_ID_STRIDE * LLAVA_CATEGORY_ORDER.index(c) + int(r["question_id"])): _key(c, r)
            for c, r in rows}


def read_answers(path: Path, data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> dict[str, str]:
    """Answers keyed ``"{category}/{id}"``: our own keys as they are; LLaVA's numeric
    ids through ``data_dir/llava_pope_test.jsonl`` when it is there, else by the
    id rule of LLaVA's question file (see the module docstring)."""
    raw = read_predictions(path)
    llava: dict[str, str] | None = None
    out: dict[str, str] = {}
    for qid, text in raw.items():
        if "/" in qid:
            key = qid
        else:
            if llava is None:
                rows, question_file = _rows(data_dir), Path(data_dir) / LLAVA_QUESTION_FILE
                llava = (_llava_ids_from_question_file(question_file, rows) if question_file.is_file()
                         else _llava_ids_by_rule(rows))
            if qid not in llava:
                raise ValueError(f"{path}: question_id {qid} is not a POPE question of {data_dir} "
                               f"(LLaVA ids: {LLAVA_ID_STRIDE} * k + id, k over {', '.join(LLAVA_CATEGORY_ORDER)})")
            key = llava[qid]
        if key in out:
            raise ValueError(f"{path}: question {key} is answered twice (second time as {qid})")
        out[key] = text
    return out


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    rows = restrict(_rows(data_dir), lambda cr: _key(*cr), only)
    keys = [_key(c, r) for c, r in rows]
    missing_predictions(keys, predictions, NAME)
    per = {}
    for category in CATEGORIES:
        mine = [(k, r) for k, (c, r) in zip(keys, rows) if c == category]
        if mine:
            per[category] = pope_metrics([predictions[k] for k, _ in mine], [r["label"] for _, r in mine]).to_dict()
            per[category]["questions"] = len(mine)
    mean = {m: sum(v[m] for v in per.values()) / len(per) for m in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
    return {"benchmark": NAME, "categories": per, "mean": mean, "num_questions": len(rows)}
