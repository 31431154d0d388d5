"""VQA accuracy (VQAv2, TextVQA, VizWiz) as each official script computes it.

Per question, with ten human answers: for each annotator, ``min(1, #other
annotators giving the predicted answer / 3)``, averaged over the ten
leave-one-out subsets, so one to four matching humans give 0.3, 0.6, 0.9, 1.0.

``answer_processing`` chooses the official definition (per benchmark):

* VQAv2 ``"none"``: GT-Vision-Lab ``vqaEval.py`` (Python 2) on the raw answer;
  ``"llava"`` (default): EvalAI's answer processor first (LLaVA's
  ``convert_vqav2_for_submission.py`` upload), then ``vqaEval.py``; ``"lmms"``:
  lmms-eval's ``vqav2_process_results`` (both sides always through EvalAI's
  ``process_punctuation`` + ``process_digit_article``, ``statistics.mean``, plain
  mean, no rounding).
* VizWiz ``"none"``: VizWiz's ``VQAEval`` (Python 3) on the raw answer;
  ``"llava"``: EvalAI's processor first (``convert_vizwiz_for_submission.py``);
  ``"lmms"``: lmms-eval's ``vizwiz_vqa_process_results`` (EvalAI's processor on
  the prediction and on every human answer, ``statistics.mean``, plain mean).
* TextVQA ``"llava"`` and ``"none"``: LLaVA's ``TextVQAAccuracyEvaluator`` (it
  processes the raw answer itself, so both are the same); ``"lmms"``: lmms-eval's
  ``textvqa_process_results`` (the same processing, ``statistics.mean``).

Quirks of ``vqaEval.py`` kept: when all ten human answers are identical neither
they nor the prediction is normalised (only whitespace-cleaned), so ``"Two"``
against ten ``"2"`` scores 0 under ``"none"``; annotators are told apart by
comparing their answer dicts, so identical dicts (same ``answer_id``) leave
together.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal, Sequence

from unified_ar.eval.answer_processing import (
    EVALAI,
    VIZWIZ_EVAL,
    VQA_EVAL,
    clean_whitespace,
    evalai_process,
    py2_round,
    vqa_normalize,
)

AnswerProcessing = Literal["llava", "none", "lmms"]
ANSWER_PROCESSING: tuple[str, ...] = ("llava", "none", "lmms")
Rounding = Literal["python2", "python3", "none"]
ROUNDING_LABELS = {"python2": "python2 round(x, 2)", "python3": "python3 round(x, 2)",
                   "none": "none (plain mean x 100)"}


def check_processing(mode: str) -> None:
    if mode not in ANSWER_PROCESSING:
        raise ValueError(f"answer_processing: expected one of {', '.join(ANSWER_PROCESSING)}, got {mode!r}")


def _per_annotator(prediction: str, gt_answers: Sequence[str], records: Sequence[dict] | None) -> list[float]:
    """``min(1, matches among the others / 3)`` for each annotator.

    ``records``: the answer dicts (``answer`` already processed); annotator ``i``'s
    "others" are the records unequal to record ``i``, as vqaEval.py selects them.
    Without records, annotators are told apart by position."""
    if not gt_answers:
        raise ValueError("a VQA question needs at least one human answer")
    if records is None:
        hits = [a == prediction for a in gt_answers]
        return [min(1, float(sum(hits) - int(h)) / 3) for h in hits]
    return [min(1, float(sum(other["answer"] == prediction for other in records if other != rec)) / 3)
            for rec in records]


def leave_one_out(prediction: str, gt_answers: Sequence[str], records: Sequence[dict] | None = None) -> float:
    """Mean over annotators of ``min(1, #other annotators giving prediction / 3)`` (``sum / len``)."""
    accs = _per_annotator(prediction, gt_answers, records)
    return float(sum(accs)) / len(accs)


def _leave_one_out_mean(prediction: str, gt_answers: Sequence[str], records: Sequence[dict] | None = None) -> float:
    """The same with ``statistics.mean`` (lmms-eval)."""
    return statistics.mean(_per_annotator(prediction, gt_answers, records))


def _with_answers(records: Sequence[dict] | None, answers: list[str]) -> list[dict] | None:
    if records is None:
        return None
    if len(records) != len(answers):
        raise ValueError(f"{len(records)} answer records for {len(answers)} answers")
    return [{**rec, "answer": a} for rec, a in zip(records, answers)]


def vqa_question_accuracy(prediction: str, gt_answers: Sequence[str],
                          answer_processing: AnswerProcessing = "llava",
                          records: Sequence[dict] | None = None) -> float:
    """Accuracy in [0, 1] of one prediction against the human answers (VQAv2 rules).

    ``records``: the annotation's answer dicts, so that annotators are told apart
    as the official script does (by dict equality); positions otherwise."""
    check_processing(answer_processing)
    if answer_processing == "lmms":
        res = vqa_normalize(clean_whitespace(prediction), EVALAI)
        gts = [vqa_normalize(clean_whitespace(a), EVALAI) for a in gt_answers]
        return _leave_one_out_mean(res, gts, _with_answers(records, gts))
    res = prediction if answer_processing == "none" else evalai_process(prediction)
    res = clean_whitespace(res, python2=True)
    gts = [clean_whitespace(a, python2=True) for a in gt_answers]
    if len(set(gts)) > 1:
        gts = [vqa_normalize(a, VQA_EVAL) for a in gts]
        res = vqa_normalize(res, VQA_EVAL)
    return leave_one_out(res, gts, _with_answers(records, gts))


def textvqa_question_accuracy(prediction: str, gt_answers: Sequence[str],
                              answer_processing: AnswerProcessing = "llava") -> float:
    """TextVQA: EvalAI processing of the prediction *and* every human answer, always.

    ``llava``/``none``: LLaVA's ``TextVQAAccuracyEvaluator`` (which asserts ten
    human answers); ``lmms``: lmms-eval's ``textvqa_process_results``."""
    check_processing(answer_processing)
    res = evalai_process(prediction)
    gts = [evalai_process(a) for a in gt_answers]
    if answer_processing == "lmms":
        return _leave_one_out_mean(res, gts)
    if len(gts) != 10:
        raise ValueError(f"TextVQAAccuracyEvaluator needs 10 human answers, got {len(gts)}")
    return leave_one_out(res, gts)


def vizwiz_question_accuracy(prediction: str, gt_answers: Sequence[str],
                             answer_processing: AnswerProcessing = "llava") -> float:
    """VizWiz's official ``VQAEval``: the prediction is always normalised (VizWiz's
    own contraction table), the human answers never (compared as written).
    ``llava`` applies EvalAI's processor first, as LLaVA's
    ``convert_vizwiz_for_submission.py`` does; ``lmms`` is lmms-eval's
    ``vizwiz_vqa_process_results`` (EvalAI's processor on both sides)."""
    check_processing(answer_processing)
    if answer_processing == "lmms":
        gts = [evalai_process(a) for a in gt_answers]
        return _leave_one_out_mean(evalai_process(prediction), gts) if gts else 0.0
    res = prediction if answer_processing == "none" else evalai_process(prediction)
    res = vqa_normalize(clean_whitespace(res), VIZWIZ_EVAL)
    return leave_one_out(res, list(gt_answers))


@dataclass
class VQAScore:
    """Aggregated VQA accuracy in percent (official rounding unless stated)."""

    overall: float
    per_answer_type: dict[str, float] = field(default_factory=dict)
    per_question_type: dict[str, float] = field(default_factory=dict)
    num_questions: int = 0
    rounding: str = ROUNDING_LABELS["python2"]

    def to_dict(self) -> dict:
        return {
            "overall": self.overall,
            "perAnswerType": self.per_answer_type,
            "perQuestionType": self.per_question_type,
            "num_questions": self.num_questions,
            "rounding": self.rounding,
        }


def _percent(values: list[float], rounding: Rounding) -> float:
    if rounding == "none":
        return 100 * (sum(values) / len(values))  # lmms-eval's mean aggregation, in percent
    # The same float expression as setAccuracy, so ties round the same way.
    value = 100 * float(sum(values)) / len(values)
    return py2_round(value, 2) if rounding == "python2" else round(value, 2)


def aggregate(rows: Sequence[tuple[float, str | None, str | None]], rounding: Rounding = "python2") -> VQAScore:
    """Aggregate ``(accuracy, question_type, answer_type)`` rows, in question order.

    ``rounding``: ``"python2"`` (vqaEval.py's ``round(100 * sum / n, 2)`` under
    Python 2), ``"python3"`` (the same under Python 3: VizWiz) or ``"none"``
    (the plain mean x 100: lmms-eval)."""
    if rounding not in ROUNDING_LABELS:
        raise ValueError(f"rounding: expected one of {', '.join(ROUNDING_LABELS)}, got {rounding!r}")
    if not rows:
        raise ValueError("no questions to score")
    by_q: dict[str, list[float]] = {}
    by_a: dict[str, list[float]] = {}
    for acc, qtype, atype in rows:
        if qtype is not None:
            by_q.setdefault(qtype, []).append(acc)
        if atype is not None:
            by_a.setdefault(atype, []).append(acc)
    return VQAScore(
        overall=_percent([r[0] for r in rows], rounding),
        per_answer_type={k: _percent(v, rounding) for k, v in by_a.items()},
        per_question_type={k: _percent(v, rounding) for k, v in by_q.items()},
        num_questions=len(rows),
        rounding=ROUNDING_LABELS[rounding],
    )
