"""MMMU (validation / dev), prompted and scored as the official MMMU-Benchmark/MMMU eval (``mmmu/``).

Files: the parquet files of the HF dataset ``MMMU/MMMU`` as downloaded, one folder per
subject: ``{Subject}/{split}-00000-of-00001.parquet`` (columns ``id, question, options``
(a Python list literal), ``answer, question_type, image_1..image_7`` (``{bytes, path}``)
and ``explanation, img_type, topic_difficulty, subfield``). Question keys are MMMU's ids
(``validation_Accounting_1``).

Prompt (``utils/data_utils.py`` ``construct_prompt`` with ``configs/llava1.5.yaml``):
multiple choice ``{question}\\n(A) o1\\n(B) o2\\n\\n{multiple_choice_suffix}``, open questions
``{question}\\n{short_answer_suffix}``. Each ``<image k>`` in the question or options becomes
our ``<image>`` marker where it stands and image k is fed there (one image per marker, in
marker order); a question without markers gets its ``image_1`` first (``<image>\\n``), as
the official LLaVA eval feeds it. The official LLaVA eval keeps the ``<image k>`` text and
feeds only ``image_1`` before the prompt.

Scoring (``utils/eval_utils.py``): multiple-choice answers go through
``parse_multi_choice_response`` (an answer with no letter or option text gets a random
letter from one ``random.Random(42)`` stream drawn in benchmark order, as the official
module's ``random.seed(42)``), then exact letter match; open answers through
``parse_open_response`` / ``eval_open``. Accuracy per subject, per discipline
(``DOMAIN_CAT2SUB_CAT``) and overall as ``calculate_ins_level_acc`` (``main_eval_only.py``).
"""
from __future__ import annotations

import ast
import functools
import io
import json
import random
import re
from pathlib import Path
from typing import Callable, Collection

from PIL import Image

from unified_ar.eval.benchmarks.base import BenchmarkOptions, VQASample, missing_predictions, restrict, with_suffix
from unified_ar.eval.predictions import read_prediction_rows

NAME = "mmmu"
DEFAULT_SPLIT = "validation"
SEED = 42  # the official eval_utils.py: random.seed(42) at import
IMAGE_MARK = "<image>"
MARKER = re.compile(r"<image (\d+)>")
NUM_IMAGE_COLUMNS = 7
REQUIRED = ("id", "question", "options", "answer", "question_type")
METADATA = ("subfield", "topic_difficulty", "img_type", "explanation")

# the official scorer's order (utils/data_utils.py CAT_SHORT2LONG values, DOMAIN_CAT2SUB_CAT)
DISCIPLINES: dict[str, tuple[str, ...]] = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                            "Pharmacy", "Public_Health"),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": ("Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials", "Mechanical_Engineering"),
}
SUBJECTS: tuple[str, ...] = tuple(sorted(s for group in DISCIPLINES.values() for s in group))


# -- files ------------------------------------------------------------------------------------
def _split(options: BenchmarkOptions) -> str:
    split = options.split or DEFAULT_SPLIT
    if split not in ("validation", "dev", "test"):
        raise ValueError(f"mmmu: --split must be validation, dev or test, not {split!r}")
    return split


def subject_files(data_dir: str | Path, split: str) -> dict[str, list[Path]]:
    """``{subject: [parquet files]}`` of ``split`` for the subjects present under ``data_dir``."""
    root = Path(data_dir)
    found = {s: sorted((root / s).glob(f"{split}-*.parquet")) for s in SUBJECTS}
    found = {s: files for s, files in found.items() if files}
    if not found:
        raise FileNotFoundError(f"mmmu: no {root}/{{Subject}}/{split}-*.parquet file (e.g. "
                                f"{root / SUBJECTS[0] / f'{split}-00000-of-00001.parquet'}); --data is the "
                                "folder of the MMMU/MMMU download")
    return found


def _read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    names = set(pq.ParquetFile(path).schema_arrow.names)
    absent = [c for c in REQUIRED if c not in names]
    if absent:
        raise KeyError(f"{path}: missing column(s) {', '.join(absent)}")
    columns = list(REQUIRED) + [c for c in METADATA if c in names]
    return pq.read_table(path, columns=columns).to_pylist()


def _rows(data_dir: str | Path, split: str) -> list[dict]:
    """Every question of ``split``, subjects in the official order, then file order; each row
    gains ``subject``, ``file``, ``row`` (its index in the file) and parsed ``choices``."""
    out = []
    for subject, files in subject_files(data_dir, split).items():
        for path in files:
            for n, row in enumerate(_read_rows(path)):
                empty = [c for c in REQUIRED if not isinstance(row[c], str)]
                if empty:
                    raise ValueError(f"{path}: row {n} ({row['id']}): {', '.join(empty)} not a string")
                row.update(subject=subject, file=path, row=n, choices=_choices(row, path))
                out.append(row)
    return out


def _choices(row: dict, path: Path) -> list[str]:
    """The ``options`` literal as a list of strings (the official code ``eval``-s it)."""
    try:
        value = ast.literal_eval(row["options"])
    except (ValueError, SyntaxError):
        raise ValueError(f"{path}: question {row['id']}: options is not a Python list literal") from None
    if not isinstance(value, list):
        raise ValueError(f"{path}: question {row['id']}: options is not a list")
    return [str(v) for v in value]


def is_multiple_choice(row: dict) -> bool:
    return row["question_type"] == "multiple-choice"


def gold(row: dict) -> str | list[str]:
    """The answer; an open answer written as a list literal (``"['24/7', '3.429']"``) is that
    list, as the official ``answer_dict_val.json`` holds it."""
    answer = row["answer"]
    if not is_multiple_choice(row) and answer.startswith("["):
        try:
            value = ast.literal_eval(answer)
        except (ValueError, SyntaxError):
            return answer
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return answer


# -- images -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _image_column(path: Path, column: str):
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[column]).column(column).combine_chunks()


def _present_images(path: Path) -> dict[int, list[bool]]:
    """``{k: [row has image_k]}`` for the image columns of ``path``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = set(pq.ParquetFile(path).schema_arrow.names)
    out = {}
    for k in range(1, NUM_IMAGE_COLUMNS + 1):
        if f"image_{k}" in names:
            col = pq.read_table(path, columns=[f"image_{k}"]).column(f"image_{k}")
            out[k] = pc.is_valid(pc.struct_field(col, "bytes")).to_pylist()
    return out


def image_loader(path: Path, k: int, row: int, qid: str) -> Callable[[], Image.Image]:
    """Decodes ``image_k`` of row ``row`` of ``path`` when called."""
    def load() -> Image.Image:
        data = _image_column(path, f"image_{k}")[row]["bytes"].as_py()
        if data is None:
            raise ValueError(f"{path}: question {qid}: image_{k} has no bytes")
        return Image.open(io.BytesIO(data))
    return load


# -- prompt -----------------------------------------------------------------------------------
def prompt_text(row: dict, options: BenchmarkOptions) -> str:
    """construct_prompt with the llava1.5.yaml formats; ``<image k>`` markers left as written."""
    if is_multiple_choice(row):
        listed = "".join(f"({chr(ord('A') + i)}) {o}\n" for i, o in enumerate(row["choices"]))
        body, suffix = f"{row['question']}\n{listed}", options.multiple_choice_suffix
        return f"{body}\n{suffix}" if suffix else body.rstrip("\n")
    return with_suffix(row["question"], options.short_answer_suffix)


def place_images(text: str, present: set[int], where: str) -> tuple[str, list[int]]:
    """``<image k>`` -> ``<image>``; returns the text and the image numbers in marker order.
    Without markers, ``image_1`` (if any) goes first, as the official LLaVA eval feeds it."""
    refs = [int(k) for k in MARKER.findall(text)]
    lost = sorted({k for k in refs if k not in present})
    if lost:
        raise ValueError(f"{where}: the text refers to <image {lost[0]}> but image_{lost[0]} is empty")
    if not refs:
        return (f"{IMAGE_MARK}\n{text}", [1]) if 1 in present else (text, [])
    return MARKER.sub(IMAGE_MARK, text), refs


def load(data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions()) -> list[VQASample]:
    split = _split(options)
    samples, present_by_file = [], {}
    for row in _rows(data_dir, split):
        path = row["file"]
        if path not in present_by_file:
            present_by_file[path] = _present_images(path)
        present = {k for k, flags in present_by_file[path].items() if flags[row["row"]]}
        text, refs = place_images(prompt_text(row, options), present, f"{path}: question {row['id']}")
        samples.append(VQASample(
            question_id=row["id"], image=[image_loader(path, k, row["row"], row["id"]) for k in refs],
            prompt=text, question=row["question"], answer=row["answer"], category=row["subject"],
            choices=row["choices"] if is_multiple_choice(row) else None,
            metadata={"question_type": row["question_type"], "images": refs,
                      **{m: row[m] for m in METADATA if m in row and m != "explanation"}}))
    return samples


# -- answer parsing (eval_utils.py) -----------------------------------------------------------
def parse_choice(response: str, letters: list[str], index2ans: dict[str, str], rng: random.Random) -> tuple[str, bool]:
    """parse_multi_choice_response: (letter, whether it was drawn at random)."""
    for char in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(char)
    padded = f" {response} "
    found = [c for c in letters if f"({c})" in padded]
    pattern = "({})" if found else " {} "
    if not found:
        found = [c for c in letters if f" {c} " in padded]
    by_text = False
    if not found and len(padded.split()) > 5:
        found = [c for c, text in index2ans.items() if text.lower() in padded.lower()]
        by_text = bool(found)
    if not found:
        if not letters:
            raise ValueError("a multiple-choice question without options")
        return rng.choice(letters), True
    if len(found) == 1:
        return found[0], False
    if by_text:
        where = [padded.lower().rfind(index2ans[c].lower()) for c in found]
    else:
        where = [padded.rfind(pattern.format(c)) for c in found]
    return found[where.index(max(where))], False  # the last mention; ties: the first letter (np.argmax)


_COMMA_NUMBER = r"-?\b\d{1,3}(?:,\d{3})+\b"
_SCIENTIFIC = r"-?\d+(?:\.\d+)?[eE][+-]?\d+"
_SIMPLE_NUMBER = r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = (":", ",", ".", "!", "?", ";", "'")


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def normalize(text: str) -> list:
    """normalize_str: a number -> [round(float, 2)]; else lower-cased, one character padded."""
    text = text.strip()
    number = _as_number(text)
    if number is not None:
        return [round(number, 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    return re.findall(_COMMA_NUMBER, text) + re.findall(_SCIENTIFIC, text) + re.findall(_SIMPLE_NUMBER, text)


def _key_parts(response: str) -> list[str]:
    """The tails after the answer indicators, one per line (``get_key_subresponses``)."""
    response = response.strip().strip(".").lower()
    lines = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for i, line in enumerate(lines):
        indicators = _KEY_INDICATORS + (("=",) if i == len(lines) - 1 else ())
        shortest = None
        for ind in indicators:
            if ind in line:
                tail = line.split(ind)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list:
    """parse_open_response: the normalised key parts and the numbers in them (deduplicated)."""
    keys = _key_parts(response)
    found = keys + [n for k in keys for n in extract_numbers(k)]
    return list({v: None for part in found for v in normalize(part)})


def open_correct(answer: str | list[str], preds: list) -> bool:
    """eval_open: a string prediction holding a normalised answer, or an equal number."""
    golds = [v for a in (answer if isinstance(answer, list) else [answer]) for v in normalize(a)]
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False


# -- scoring ----------------------------------------------------------------------------------
def _judge(rows: list[dict], predictions: dict[str, str], check: bool = True) -> list[dict]:
    """Per row: ``parsed`` (MC letter / open: the parsed list), ``correct`` (None unless ``check``),
    ``random`` (the MC letter was drawn)."""
    rng = random.Random(SEED)
    out = []
    for row in rows:
        response = predictions[row["id"]]
        if is_multiple_choice(row):
            letters = [chr(ord("A") + i) for i in range(len(row["choices"]))]
            try:
                letter, drawn = parse_choice(response, letters, dict(zip(letters, row["choices"])), rng)
            except ValueError as e:
                raise ValueError(f"{row['file']}: question {row['id']}: {e}") from None
            out.append({"parsed": letter, "correct": letter == row["answer"] if check else None, "random": drawn})
        else:
            parsed = parse_open(response)
            out.append({"parsed": parsed, "correct": open_correct(gold(row), parsed) if check else None,
                        "random": False})
    return out


def judge(predictions: dict[str, str], data_dir: str | Path, options: BenchmarkOptions = BenchmarkOptions(),
          only: Collection[str] | None = None) -> dict[str, dict]:
    """``{id: {"parsed", "correct", "random"}}`` for the questions :func:`score` counts (its order)."""
    rows = _scored_rows(data_dir, options, only)
    missing_predictions([r["id"] for r in rows], predictions, NAME)
    return {r["id"]: j for r, j in zip(rows, _judge(rows, predictions))}


def _instance_acc(groups: list[dict]) -> float:
    """calculate_ins_level_acc: sum(acc * num) / sum(num), 0 when empty."""
    total = sum(g["num"] for g in groups)
    return sum(g["acc"] * g["num"] for g in groups) / total if total else 0


def _scored_rows(data_dir, options: BenchmarkOptions, only: Collection[str] | None) -> list[dict]:
    split = _split(options)
    if split == "test":
        raise ValueError("mmmu: the test split has no public answers; score validation or dev, or write the "
                         "upload file ({id: answer}) with unified_ar.eval.benchmarks.mmmu.write_submission")
    return restrict(_rows(data_dir, split), lambda r: r["id"], only)


def score(predictions: dict[str, str], data_dir: str | Path,
          options: BenchmarkOptions = BenchmarkOptions(), only: Collection[str] | None = None) -> dict:
    rows = _scored_rows(data_dir, options, only)
    missing_predictions([r["id"] for r in rows], predictions, NAME)
    judged = _judge(rows, predictions)
    hits = [j["correct"] for j in judged]
    subjects = {}
    for s in SUBJECTS:
        mine = [h for r, h in zip(rows, hits) if r["subject"] == s]
        if mine:
            subjects[s] = {"num": len(mine), "correct": sum(mine), "acc": sum(mine) / len(mine)}
    disciplines = {}
    for name, members in DISCIPLINES.items():
        groups = [subjects[s] for s in members if s in subjects]
        disciplines[name] = {"num": sum(g["num"] for g in groups), "acc": _instance_acc(groups)}
    overall = {"num": len(rows), "acc": _instance_acc(list(subjects.values()))}
    return {"benchmark": NAME, "split": _split(options), "accuracy": 100 * overall["acc"], "overall": overall,
            "disciplines": disciplines, "subjects": subjects, "num_questions": len(rows),
            "random_choices": sum(j["random"] for j in judged), "random_seed": SEED}


def submission(predictions: dict[str, str], data_dir: str | Path,
               options: BenchmarkOptions = BenchmarkOptions()) -> dict[str, str]:
    """The official ``{id: answer}`` file (run_llava.py's output): MC answers parsed to letters."""
    rows = _rows(data_dir, _split(options))
    missing_predictions([r["id"] for r in rows], predictions, NAME)
    return {r["id"]: j["parsed"] if is_multiple_choice(r) else predictions[r["id"]]
            for r, j in zip(rows, _judge(rows, predictions, check=False))}


def write_submission(predictions: dict[str, str], data_dir: str | Path, out: str | Path,
                     options: BenchmarkOptions = BenchmarkOptions()) -> dict:
    upload = submission(predictions, data_dir, options)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(upload, indent=1))
    return {"submission": str(out), "questions": len(upload)}


# -- answer files -----------------------------------------------------------------------------
def _row_pair(row, path: Path, n: int) -> tuple[str, object]:
    if not isinstance(row, dict):
        raise ValueError(f"{path}: entry {n} is not an object")
    for id_key, text_key in (("question_id", "text"), ("id", "response"), ("question_id", "answer")):
        if id_key in row and text_key in row:
            return str(row[id_key]), row[text_key]
    raise ValueError(f"{path}: entry {n} needs question_id and text (LLaVA answer file) or id and response "
                     "(the official output.json)")


def read_answers(path: Path, data_dir, options: BenchmarkOptions) -> dict[str, str]:
    """Raw answers keyed by MMMU id from: the official ``{id: answer}`` JSON (main_eval_only.py's
    input, run_llava.py's output), LLaVA-style JSONL ``{"question_id", "text"}`` (ours), or the
    official parse-and-eval ``output.json`` list ``[{"id", "response", ...}]``."""
    del data_dir, options
    rows = read_prediction_rows(path)
    pairs = list(rows.items()) if isinstance(rows, dict) else [_row_pair(r, path, n) for n, r in enumerate(rows)]
    out: dict[str, str] = {}
    for key, answer in pairs:
        if not isinstance(answer, str):
            raise ValueError(f"{path}: question {key}: the answer is {type(answer).__name__}, not a string")
        if key in out and out[key] != answer:
            raise ValueError(f"{path}: question {key} has two different answers")
        out[key] = answer
    return out
