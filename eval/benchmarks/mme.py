"""MME (perception and cognition), scored as MME's ``eval_tool/calculation.py``.

Layout (the official ``MME_Benchmark_release_version``): one folder per
category; each image has a ``.txt`` with two lines ``question<TAB>answer``,
either beside the image or in ``questions_answers_YN/`` with the image in
``images/``. The questions end in "Please answer yes or no."; LLaVA-1.5 asks them
with that sentence replaced by the short-answer suffix on a new line (its
``llava_mme.jsonl``), and so do we when the model's short-answer suffix is not
empty (an empty one asks the question as written). Question ids are ``"{category}/{image file}/{0|1}"`` (the line of the
txt).

Scoring reads the txt files only, as LLaVA's ``convert_answer_to_mme.py`` and
calculation.py do: a prediction key ``"{category}/{image file}/{k}"`` is
matched on the image's stem, so no image file is needed. :func:`read_answers`
also reads LLaVA's answer files (``llava_mme.jsonl`` ids
``"{category}/[images/]{image file}"``, shared by an image's two questions), matching each answer
on its question text as convert_answer_to_mme.py does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from unified_ar.eval.benchmarks.base import BenchmarkOptions, VQASample, missing_predictions, restrict, with_suffix
from unified_ar.eval.metrics import MME_CATEGORIES, mme_scores
from unified_ar.eval.predictions import read_prediction_rows

NAME = "mme"
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")
LLAVA_SUFFIX = "Answer the question using a single word or phrase."
YES_NO = "Please answer yes or no."


def _image_for(txt: Path) -> Path:
    folder = txt.parent.parent / "images" if txt.parent.name == "questions_answers_YN" else txt.parent
    for suffix in IMAGE_SUFFIXES:
        if (folder / (txt.stem + suffix)).is_file():
            return folder / (txt.stem + suffix)
    raise FileNotFoundError(f"{txt}: no image {txt.stem}.jpg/.png in {folder}")


def _rows(data_dir: str | Path) -> list[dict]:
    """Every question of the txt files (no image is looked at); ``key`` is ``"{category}/{stem}/{k}"``."""
    root = Path(data_dir)
    known = [c for names in MME_CATEGORIES.values() for c in names]
    categories = [c for c in known if (root / c).is_dir()]
    if not categories:
        raise FileNotFoundError(f"{root}: no MME category folders (expected some of {', '.join(known)})")
    rows = []
    for category in categories:
        qa_dir = root / category / "questions_answers_YN"
        for txt in sorted((qa_dir if qa_dir.is_dir() else root / category).glob("*.txt")):
            for k, line in enumerate(t for t in txt.read_text().splitlines() if t.strip()):
                parts = line.strip().split("\t")  # convert_answer_to_mme.py: line.strip().split('\t')
                if len(parts) != 2:
                    raise ValueError(f"{txt} line {k + 1}: expected 'question<TAB>answer'")
                rows.append({"key": f"{category}/{txt.stem}/{k}", "k": k, "category": category, "txt": txt,
                             "question": parts[0], "answer": parts[1]})
    return rows


def mme_prompt(question: str, short_answer_suffix: str) -> str:
    """LLaVA-1.5's MME prompt: " Please answer yes or no." -> "\n{suffix}"; as written without a suffix."""
    if not short_answer_suffix:
        return question
    return with_suffix(question.removesuffix(YES_NO).rstrip(" "), short_answer_suffix)


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    samples = []
    for r in _rows(data_dir):
        image = _image_for(r["txt"])
        samples.append(VQASample(question_id=f"{r['category']}/{image.name}/{r['k']}", image=str(image),
                                 prompt=mme_prompt(r["question"], options.short_answer_suffix),
                                 question=r["question"], answer=r["answer"],
                                 category=r["category"]))
    return samples


def _score_key(key: str) -> str:
    """``"{category}/{image file}/{k}"`` -> ``"{category}/{stem}/{k}"``."""
    parts = key.split("/")
    if len(parts) < 3 or not parts[-1].isdigit():
        raise ValueError(f"MME: prediction key {key!r} is not '{{category}}/{{image file}}/{{k}}'")
    return f"{parts[0]}/{Path(parts[-2]).stem}/{parts[-1]}"


def _by_score_key(predictions: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, text in predictions.items():
        sk = _score_key(key)
        if sk in out and out[sk] != text:
            raise ValueError(f"MME: two different predictions for {sk} (one is {key!r})")
        out[sk] = text
    return out


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    rows = _rows(data_dir)
    if only is not None:
        rows = restrict(rows, lambda r: r["key"], {_score_key(k) for k in only})
    preds = _by_score_key(predictions)
    missing_predictions([r["key"] for r in rows], preds, NAME)
    scores = mme_scores((r["category"], r["txt"].stem, r["answer"], preds[r["key"]]) for r in rows)
    return {"benchmark": NAME, **scores, "num_questions": len(rows)}


def _converter_questions(prompt: str) -> list[str]:
    """The txt question(s) convert_answer_to_mme.py looks up for a LLaVA prompt, in its order."""
    if LLAVA_SUFFIX in prompt:
        prompt = prompt.replace(LLAVA_SUFFIX, "").strip()
    if YES_NO in prompt:
        return [prompt]
    return [f"{prompt} {YES_NO}", f"{prompt}  {YES_NO}"]


def _llava_key(row: dict, where: str, questions: dict[tuple[str, str, str], int]) -> str:
    qid, prompt = str(row["question_id"]), row.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: question_id {qid!r} is LLaVA's '{{category}}/{{image}}' form and needs its 'prompt'")
    category, image = qid.split("/")[0], qid.split("/")[-1]
    stem = Path(image).stem
    for question in _converter_questions(prompt):
        if (category, stem, question) in questions:
            return f"{category}/{image}/{questions[category, stem, question]}"
    raise ValueError(f"{where}: no question {prompt!r} for {category}/{stem}.txt in the MME data folder")


def read_answers(path: Path, data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> dict[str, str]:
    """Answers keyed ``"{category}/{image file}/{k}"``, from our own files (ids in that form)
    or LLaVA's (``question_id`` = ``"{category}/[images/]{image file}"`` plus the ``prompt``)."""
    rows = read_prediction_rows(path)
    if isinstance(rows, dict):
        rows = [{"question_id": k, "text": v} for k, v in rows.items()]
    questions: dict[tuple[str, str, str], int] | None = None
    out: dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        where = f"{path} entry {n}"
        if not isinstance(row, dict) or "question_id" not in row or "text" not in row:
            raise ValueError(f"{where}: an answer needs 'question_id' and 'text'")
        qid = str(row["question_id"])
        if qid.split("/")[-1].isdigit():
            key = qid
        else:
            if questions is None:
                questions = {(r["category"], r["txt"].stem, r["question"]): r["k"] for r in _rows(data_dir)}
            key = _llava_key(row, where, questions)
        if key in out:
            raise ValueError(f"{where}: question {key} is answered twice")
        out[key] = str(row["text"])
    return out
