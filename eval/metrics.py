"""Yes/no and multiple-choice metrics as the official / LLaVA scripts compute them.

* POPE: LLaVA ``llava/eval/eval_pope.py`` answer parsing and metrics;
* MME: the MME ``eval_tool/calculation.py`` parsing, acc and acc+ per category,
  summed into perception and cognition scores;
* multiple choice: LLaVA ``eval_science_qa.py``'s letter extraction, used for
  ScienceQA and for the local MMBench score; MMBench circular grouping as
  OpenCompass/VLMEvalKit do it (``g_index = index % 1e6``);
* GQA: exact match after LLaVA's ``convert_gqa_for_eval.py`` cleaning.

All model outputs are ``.strip()``-ed first, as LLaVA's answer files hold
stripped generations.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

MME_CATEGORIES: dict[str, tuple[str, ...]] = {
    "perception": ("existence", "count", "position", "color", "posters", "celebrity",
                   "scene", "landmark", "artwork", "OCR"),
    "cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}
CIRCULAR_STRIDE = 1_000_000
SQA_LETTERS = "ABCDE"
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


# ----------------------------------------------------------------------------- POPE
def pope_parse(text: str) -> str:
    """LLaVA's POPE rule: first sentence, commas dropped, split on spaces; ``No``,
    ``no`` or ``not`` as a word means no, anything else (also gibberish) yes."""
    text = text.strip()
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


@dataclass
class BinaryMetrics:
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    # The official script divides by zero here (e.g. no "yes" at all); we report 0.0.
    return num / den if den else 0.0


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> BinaryMetrics:
    """Metrics of parsed ``predictions`` (raw text) against ``labels`` ("yes"/"no")."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"POPE: {len(predictions)} predictions for {len(labels)} labels")
    pred = [0 if pope_parse(p) == "no" else 1 for p in predictions]
    gold = [0 if lab == "no" else 1 for lab in labels]
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return BinaryMetrics(tp, fp, tn, fn, accuracy=(tp + tn) / len(gold), precision=precision,
                         recall=recall, f1=_ratio(2 * precision * recall, precision + recall),
                         yes_ratio=pred.count(1) / len(pred))


# ----------------------------------------------------------------------------- MME
def mme_parse(text: str) -> str:
    """MME ``parse_pred_ans`` on the lower-cased answer: exact yes/no, else a
    yes/no within the first four characters, else "other"."""
    text = text.strip().lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_scores(rows: Iterable[tuple[str, str, str, str]]) -> dict:
    """``rows`` of ``(category, image, ground_truth, raw_prediction)``.

    Per category: acc (over questions; "other" counts wrong) and acc+ (images
    with both questions right), score = 100 * (acc + acc+); perception and
    cognition are sums over their categories present."""
    groups: dict[str, dict[str, list[bool]]] = {}
    for category, image, gt, pred in rows:
        gt = gt.strip().lower()
        if gt not in ("yes", "no"):
            raise ValueError(f"MME {category}/{image}: ground truth must be yes/no, got {gt!r}")
        groups.setdefault(category, {}).setdefault(image, []).append(mme_parse(pred) == gt)
    categories = {}
    for category, images in groups.items():
        bad = [img for img, hits in images.items() if len(hits) != 2]
        if bad:
            raise ValueError(f"MME {category}: every image needs exactly 2 questions; {bad[0]} has "
                             f"{len(images[bad[0]])}")
        hits = [h for pair in images.values() for h in pair]
        acc = sum(hits) / len(hits)
        acc_plus = sum(all(pair) for pair in images.values()) / len(images)
        categories[category] = {"acc": 100 * acc, "acc_plus": 100 * acc_plus,
                                "score": acc * 100 + acc_plus * 100, "images": len(images)}
    out: dict = {"categories": categories}
    for kind, names in MME_CATEGORIES.items():
        present = [n for n in names if n in categories]
        out[kind] = sum(categories[n]["score"] for n in present) if present else None
    unknown = sorted(set(categories) - {n for names in MME_CATEGORIES.values() for n in names})
    if unknown:
        raise ValueError(f"MME: unknown categories {unknown}")
    return out


# ----------------------------------------------------------------------------- multiple choice
def extract_choice(text: str, num_choices: int, letters: str = SQA_LETTERS) -> int:
    """LLaVA's ScienceQA rule: the answer is the letter itself, or ``"X. ..."``,
    or exactly one ``"The answer is X."``; returns the option index or -1."""
    options = list(letters)  # a list, so "" or "AB" are not "in" it
    text = text.strip()
    if text in options:
        letter = text
    elif len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        letter = text[0]
    else:
        found = _ANSWER_IS.findall(text)
        letter = found[0] if len(found) == 1 else "FAILED"
    return options.index(letter) if letter in options[:num_choices] else -1


def circular_accuracy(rows: Sequence[tuple[int, bool, dict[str, str]]]) -> dict:
    """MMBench circular evaluation.

    ``rows``: ``(index, hit, groups)`` for every asked row, rotations included;
    ``index % 1e6`` names the original question. A question counts only if every
    one of its rotations is right. ``groups`` (e.g. category, l2-category) of the
    original row give per-group accuracies. Vanilla accuracy uses originals only."""
    by_group: dict[int, list[bool]] = {}
    originals: dict[int, tuple[bool, dict[str, str]]] = {}
    for index, hit, groups in rows:
        g = index % CIRCULAR_STRIDE
        by_group.setdefault(g, []).append(hit)
        if index == g:
            originals[g] = (hit, groups)
    orphans = sorted(set(by_group) - set(originals))
    if orphans:
        raise ValueError(f"MMBench: rotated rows without their original question (index {orphans[0]})")
    circ = {g: all(h) for g, h in by_group.items()}
    out = {"circular_accuracy": 100 * sum(circ.values()) / len(circ),
           "vanilla_accuracy": 100 * sum(h for h, _ in originals.values()) / len(originals),
           "questions": len(circ), "rows": len(rows)}
    keys = sorted({k for _, grp in originals.values() for k in grp})
    for key in keys:
        per: dict[str, list[bool]] = {}
        for g, (_, grp) in originals.items():
            if grp.get(key) is not None:
                per.setdefault(grp[key], []).append(circ[g])
        out[key] = {name: 100 * sum(v) / len(v) for name, v in sorted(per.items())}
    return out


# ----------------------------------------------------------------------------- GQA
def gqa_clean(text: str) -> str:
    """LLaVA ``convert_gqa_for_eval.py``: strip trailing periods, lower-case."""
    return text.strip().rstrip(".").lower()


def exact_match_accuracy(pairs: Iterable[tuple[str, str]]) -> float:
    """Percent of ``(prediction, answer)`` pairs that are equal."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no questions to score")
    return 100 * sum(p == a for p, a in pairs) / len(pairs)
