"""Yes/no and multiple-choice metrics as the official / LLaVA scripts compute them.

* POPE: LLaVA ``llava/eval/eval_pope.py`` answer parsing and metrics;
* MME: the MME ``eval_tool/calculation.py`` parsing, acc and acc+ per category,
  summed into perception and cognition scores;
* multiple choice: LLaVA ``eval_science_qa.py``'s letter extraction (ScienceQA);
  VLMEvalKit's ``can_infer`` exact matching and circular evaluation without a
  judge (MMBench, groups ``g_index = index % 1e6``);
* GQA: the official ``eval.py`` helpers; LLaVA's ``convert_gqa_for_eval.py`` cleaning.

Every answer is read as written (not stripped), as the official scripts read
their answer files; our own generations are stripped when decoded, as LLaVA's are.
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
    """LLaVA's POPE rule: first sentence (text before the first ``.``), commas
    dropped, split on single spaces; ``No``, ``no`` or ``not`` as a word means no,
    anything else (``NO``, ``Not``, empty, gibberish) yes. The text is read as
    given, not stripped, as eval_pope.py does (``"No\\n"`` is one word: yes)."""
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
    """MME ``parse_pred_ans`` on the lower-cased answer, not stripped: exact
    yes/no, else ``yes`` inside the first four characters, else ``no`` there,
    else "other". calculation.py sees the answer with the line's ``\\n`` after it,
    which changes nothing here (``"n"`` and ``"n\\n"`` are both "other")."""
    text = text.lower()
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

    Per category: acc (over questions; "other" counts wrong, and is counted in
    ``other``), acc+ (images with both questions right), score = acc*100 +
    acc+*100 in that order; perception and cognition are sums over their
    categories present, in calculation.py's order."""
    groups: dict[str, dict[str, list[bool]]] = {}
    others: dict[str, int] = {}
    for category, image, gt, pred in rows:
        gt = gt.strip().lower()
        if gt not in ("yes", "no"):
            raise ValueError(f"MME {category}/{image}: ground truth must be yes/no, got {gt!r}")
        parsed = mme_parse(pred)
        others[category] = others.get(category, 0) + (parsed == "other")
        groups.setdefault(category, {}).setdefault(image, []).append(parsed == gt)
    unknown = sorted(set(groups) - {n for names in MME_CATEGORIES.values() for n in names})
    if unknown:
        raise ValueError(f"MME: unknown categories {unknown}")
    categories = {c: _mme_category(c, groups[c], others[c]) for names in MME_CATEGORIES.values()
                  for c in names if c in groups}
    out: dict = {"categories": categories}
    for kind, names in MME_CATEGORIES.items():
        present = [n for n in names if n in categories]
        out[kind] = sum(categories[n]["score"] for n in present) if present else None
    return out


def _mme_category(category: str, images: dict[str, list[bool]], other: int) -> dict:
    bad = [img for img, hits in images.items() if len(hits) != 2]
    if bad:
        raise ValueError(f"MME {category}: every image needs exactly 2 questions; {bad[0]} has "
                         f"{len(images[bad[0]])}")
    hits = [h for pair in images.values() for h in pair]
    acc = sum(hits) / len(hits)
    acc_plus = sum(all(pair) for pair in images.values()) / len(images)
    return {"acc": 100 * acc, "acc_plus": 100 * acc_plus, "score": acc * 100 + acc_plus * 100,
            "images": len(images), "other": other}


# ----------------------------------------------------------------------------- multiple choice
def extract_choice(text: str, num_choices: int, letters: str = SQA_LETTERS) -> int:
    """LLaVA's ScienceQA rule on the answer as written (not stripped): the answer is
    the letter itself, or ``"X. ..."``, or exactly one ``"The answer is X."``
    (``.`` any character); returns the option index or -1 (LLaVA's "FAILED")."""
    options = list(letters)  # a list, so "" or "AB" are not "in" it
    if text in options:
        letter = text
    elif len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        letter = text[0]
    else:
        found = _ANSWER_IS.findall(text)
        letter = found[0] if len(found) == 1 else "FAILED"
    return options.index(letter) if letter in options[:num_choices] else -1


MMB_API_FAILED = "Failed to obtain answer via API"
MMB_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
                "I'm sorry, but without the image provided", "Cannot determine the answer")
MMB_SEPARATORS = ".()[],:;!*#{}"
_MMB_VERBOSE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def mmbench_infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_option``: the one option letter standing as a word
    (after ``.()[],:;!*#{}`` become spaces) among the last five words; ``"Z"`` for
    a refusal or a lone ``Z``; else ``answer is X`` (any case, X in A-D)."""
    if MMB_API_FAILED in answer:
        return None
    if any(r in answer for r in MMB_REFUSALS):
        return "Z"
    words = answer
    for c in MMB_SEPARATORS:
        words = words.replace(c, " ")
    words = words.split()
    present = [c for c in choices if c in words]
    if len(present) == 1:
        if words.index(present[0]) > len(words) - 5:
            return present[0]
    elif not present and "Z" in words:
        return "Z"
    match = _MMB_VERBOSE.search(answer)
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return None


def mmbench_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_text``: the one option whose lower-cased text is inside
    the lower-cased answer, unless the answer is over twice the options' total length."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    found = [k for k, v in choices.items() if str(v).lower() in answer]
    return found[0] if len(found) == 1 else None


def mmbench_infer(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer`` (exact matching): the option letter, ``"Z"``, or None.
    Without a judge, ``"Z"`` and None are both wrong (its ``exact_matching`` policy)."""
    return mmbench_infer_option(answer, choices) or mmbench_infer_text(answer, choices)


def _group_accuracy(items: Sequence[tuple[bool, dict[str, str]]], key: str) -> dict[str, float]:
    per: dict[str, list[bool]] = {}
    for hit, groups in items:
        if groups.get(key) is not None:
            per.setdefault(groups[key], []).append(hit)
    return {name: percent(v) for name, v in sorted(per.items())}


def circular_accuracy(rows: Sequence[tuple[int, bool, dict[str, str]]]) -> dict:
    """MMBench circular evaluation as VLMEvalKit's ``mcq_circular_eval`` + ``report_acc``.

    ``rows``: ``(index, hit, groups)`` for every asked row, rotations included;
    ``g_index = index % 1e6`` names the original question, which is right only if
    every one of its rows is. ``groups`` (category, l2-category) of the original
    row give per-group accuracies. Also its ``PRINT_VANILLA`` figures: vanilla
    (original rows only) and vanilla_all (every row as a question)."""
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
    circ = [(all(by_group[g]), grp) for g, (_, grp) in originals.items()]
    vanilla = list(originals.values())
    every = [(hit, groups) for _, hit, groups in rows]
    out: dict = {"circular_accuracy": percent([h for h, _ in circ]),
                 "vanilla_accuracy": percent([h for h, _ in vanilla]),
                 "vanilla_all_accuracy": percent([h for h, _ in every]),
                 "questions": len(circ), "rows": len(rows)}
    keys = sorted({k for _, grp in vanilla for k in grp})
    out.update({key: _group_accuracy(circ, key) for key in keys})
    out["vanilla"] = {key: _group_accuracy(vanilla, key) for key in keys}
    out["vanilla_all"] = {key: _group_accuracy(every, key) for key in keys}
    return out


# ----------------------------------------------------------------------------- GQA
GQA_NOT_A_STEP = ("exist", "query: name", "choose name")


def gqa_clean(text: str) -> str:
    """LLaVA ``convert_gqa_for_eval.py``: ``text.rstrip('.').lower()`` (no strip:
    ``"yes "`` stays wrong)."""
    return text.rstrip(".").lower()


def gqa_steps(semantic: Sequence[dict]) -> int:
    """eval.py ``getStepsNum``: operations of the program except those whose
    ``"operation: argument"`` contains ``exist``, ``query: name`` or ``choose name``."""
    return sum(not any(o in f"{c['operation']}: {c['argument']}" for o in GQA_NOT_A_STEP) for c in semantic)


def gqa_chi_square(gold: dict[str, dict[str, int]], predicted: dict[str, dict[str, int]]) -> float:
    """eval.py ``chiSquare``: per global group, sum of ``(o - e)^2 / e`` over the gold
    answers, averaged over groups weighted by their question counts."""
    total, weight = 0.0, 0
    for group, answers in gold.items():
        score = sum((predicted.get(group, {}).get(a, 0) - e) ** 2 / e for a, e in answers.items())
        n = sum(answers.values())
        total += score * n
        weight += n
    if not weight:
        raise ValueError("GQA distribution: no question has a global group")
    return total / weight


def percent(hits: Sequence[bool]) -> float:
    """eval.py ``avg(...) * 100`` (0 for no questions, as its ``avg`` returns)."""
    return float(sum(hits)) / len(hits) * 100 if hits else 0.0


def exact_match_accuracy(pairs: Iterable[tuple[str, str]]) -> float:
    """Percent of ``(prediction, answer)`` pairs that are equal."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no questions to score")
    return percent([p == a for p, a in pairs])
