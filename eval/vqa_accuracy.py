"""VQA accuracy (VQAv2, TextVQA, VizWiz) as the official scripts compute it.

Per question, with ten human answers: for each annotator, ``min(1, #other
annotators giving the predicted answer / 3)``, averaged over the ten
leave-one-out subsets, so one to four matching humans give 0.3, 0.6, 0.9, 1.0.

``answer_processing`` chooses what happens to the model's answer first:

* ``"llava"`` (default): EvalAI's answer processor (what LLaVA's
  ``convert_vqav2_for_submission.py`` uploads), then the official ``vqaEval.py``;
* ``"none"``: the official ``vqaEval.py`` on the raw answer;
* ``"lmms"``: lmms-eval's ``vqav2_process_results``: EvalAI processor, then
  EvalAI's (not vqaEval's) punctuation rule when the humans disagree, and the
  per-question mean taken with ``statistics.mean``; reported without Python 2
  rounding because lmms-eval reports the plain mean.

Quirk of ``vqaEval.py`` kept: when all ten human answers are identical neither
they nor the prediction is normalised (only whitespace-cleaned), so ``"Two"``
against ten ``"2"`` scores 0 under ``"none"``.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal, Sequence

from unified_ar.eval.answer_processing import (
    EVALAI_COMMA,
    VQA_COMMA,
    clean_whitespace,
    evalai_process,
    py2_round,
    vqa_normalize,
)

AnswerProcessing = Literal["llava", "none", "lmms"]
ANSWER_PROCESSING: tuple[str, ...] = ("llava", "none", "lmms")


def check_processing(mode: str) -> None:
    if mode not in ANSWER_PROCESSING:
        raise ValueError(f"answer_processing: expected one of {', '.join(ANSWER_PROCESSING)}, got {mode!r}")


def leave_one_out(prediction: str, gt_answers: Sequence[str]) -> float:
    """Mean over annotators i of ``min(1, #{j != i : gt[j] == prediction} / 3)``.

    Annotators are told apart by position; the official script compares answer
    dicts, which differ by ``answer_id``, so this is the same thing."""
    if not gt_answers:
        raise ValueError("a VQA question needs at least one human answer")
    matches = [a == prediction for a in gt_answers]
    total = sum(matches)
    accs = [min(1, float(total - int(m)) / 3) for m in matches]
    return float(sum(accs)) / len(accs)


def _leave_one_out_mean(prediction: str, gt_answers: Sequence[str]) -> float:
    matches = [a == prediction for a in gt_answers]
    total = sum(matches)
    return statistics.mean(min(1, float(total - int(m)) / 3) for m in matches)


def vqa_question_accuracy(prediction: str, gt_answers: Sequence[str],
                          answer_processing: AnswerProcessing = "llava") -> float:
    """Accuracy in [0, 1] of one prediction against the human answers (VQAv2 rules)."""
    check_processing(answer_processing)
    res = prediction if answer_processing == "none" else evalai_process(prediction)
    res = clean_whitespace(res)
    gts = [clean_whitespace(a) for a in gt_answers]
    comma = EVALAI_COMMA if answer_processing == "lmms" else VQA_COMMA
    if len(set(gts)) > 1:
        gts = [vqa_normalize(a, comma) for a in gts]
        res = vqa_normalize(res, comma)
    if answer_processing == "lmms":
        return _leave_one_out_mean(res, gts)
    return leave_one_out(res, gts)


def textvqa_question_accuracy(prediction: str, gt_answers: Sequence[str],
                              answer_processing: AnswerProcessing = "llava") -> float:
    """TextVQA: LLaVA's ``TextVQAAccuracyEvaluator`` (EvalAI processing of the
    prediction *and* every human answer, always) for ``llava``/``lmms``; the
    vqaEval.py rules on the raw answer for ``none``."""
    check_processing(answer_processing)
    if answer_processing == "none":
        return vqa_question_accuracy(prediction, gt_answers, "none")
    return leave_one_out(evalai_process(prediction), [evalai_process(a) for a in gt_answers])


def vizwiz_question_accuracy(prediction: str, gt_answers: Sequence[str],
                             answer_processing: AnswerProcessing = "llava") -> float:
    """VizWiz's official ``VQAEval``: the prediction is always normalised, the
    human answers never (they are compared as written; unanswerable questions
    carry the human answer ``unanswerable``). ``llava``/``lmms`` apply EvalAI's
    processor first, as LLaVA's ``convert_vizwiz_for_submission.py`` does."""
    check_processing(answer_processing)
    res = prediction if answer_processing == "none" else evalai_process(prediction)
    res = vqa_normalize(clean_whitespace(res))
    return leave_one_out(res, list(gt_answers))


@dataclass
class VQAScore:
    """Aggregated VQA accuracy in percent (official rounding unless stated)."""

    overall: float
    per_answer_type: dict[str, float] = field(default_factory=dict)
    per_question_type: dict[str, float] = field(default_factory=dict)
    num_questions: int = 0
    rounding: str = "python2 round(x, 2)"

    def to_dict(self) -> dict:
        return {
            "overall": self.overall,
            "perAnswerType": self.per_answer_type,
            "perQuestionType": self.per_question_type,
            "num_questions": self.num_questions,
            "rounding": self.rounding,
        }


def _percent(values: list[float], exact: bool) -> float:
    if exact:
        return 100 * statistics.mean(values)
    # The same float expression as setAccuracy, so ties round the same way.
    return py2_round(100 * float(sum(values)) / len(values), 2)


def aggregate(rows: Sequence[tuple[float, str | None, str | None]], exact: bool = False) -> VQAScore:
    """Aggregate ``(accuracy, question_type, answer_type)`` rows, in question order.

    ``exact=True`` gives the plain mean x 100 (lmms-eval); otherwise vqaEval's
    ``round(100 * sum / n, 2)`` with Python 2 rounding."""
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
        overall=_percent([r[0] for r in rows], exact),
        per_answer_type={k: _percent(v, exact) for k, v in by_a.items()},
        per_question_type={k: _percent(v, exact) for k, v in by_q.items()},
        num_questions=len(rows),
        rounding="none (plain mean x 100)" if exact else "python2 round(x, 2)",
    )
