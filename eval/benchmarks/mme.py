"""MME (perception and cognition), scored as MME's ``eval_tool/calculation.py``.

Layout (the official ``MME_Benchmark_release_version``): one folder per
category; each image has a ``.txt`` with two lines ``question<TAB>answer``,
either beside the image or in ``questions_answers_YN/`` with the image in
``images/``. The questions already end in "Please answer yes or no.", so no
suffix is added (LLaVA-1.5 asks them as they are). Question ids are
``"{category}/{image file}/{0|1}"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import BenchmarkOptions, VQASample, missing_predictions, restrict
from unified_ar.eval.metrics import MME_CATEGORIES, mme_scores

NAME = "mme"
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")


def _image_for(txt: Path) -> Path:
    folder = txt.parent.parent / "images" if txt.parent.name == "questions_answers_YN" else txt.parent
    for suffix in IMAGE_SUFFIXES:
        if (folder / (txt.stem + suffix)).is_file():
            return folder / (txt.stem + suffix)
    raise FileNotFoundError(f"{txt}: no image {txt.stem}.jpg/.png in {folder}")


def _rows(data_dir: str | Path) -> list[dict]:
    root = Path(data_dir)
    known = [c for names in MME_CATEGORIES.values() for c in names]
    categories = [c for c in known if (root / c).is_dir()]
    if not categories:
        raise FileNotFoundError(f"{root}: no MME category folders (expected some of {', '.join(known)})")
    rows = []
    for category in categories:
        qa_dir = root / category / "questions_answers_YN"
        txts = sorted((qa_dir if qa_dir.is_dir() else root / category).glob("*.txt"))
        for txt in txts:
            image = _image_for(txt)
            for k, line in enumerate(t for t in txt.read_text().splitlines() if t.strip()):
                parts = line.split("\t")
                if len(parts) != 2:
                    raise ValueError(f"{txt} line {k + 1}: expected 'question<TAB>answer'")
                rows.append({"id": f"{category}/{image.name}/{k}", "category": category, "image": image,
                             "question": parts[0], "answer": parts[1].strip()})
    return rows


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    return [VQASample(question_id=r["id"], image=str(r["image"]), prompt=r["question"], question=r["question"],
                      answer=r["answer"], category=r["category"]) for r in _rows(data_dir)]


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    rows = restrict(_rows(data_dir), lambda r: r["id"], only)
    missing_predictions([r["id"] for r in rows], predictions, NAME)
    scores = mme_scores((r["category"], r["image"].name, r["answer"], predictions[r["id"]]) for r in rows)
    return {"benchmark": NAME, **scores, "num_questions": len(rows)}
