"""GQA conformance: our scorer against the official GQA ``eval.py``, run on the fixture.

Official code run (Python 3, unchanged; the GQA-site script as LLaVA's evaluation
docs have it, with ``choices`` optional for test-dev):
SHI-Labs/VCoder @ 4e85acef896cee7843257d5d844ec945407efb13,
``playground/data/eval/gqa/data/eval/eval.py``; LLaVA's cleaning from
haotian-liu/LLaVA @ c121f0432da27facab705978f83c4ada465e46fd,
``scripts/convert_gqa_for_eval.py``. Figures were read from eval.py's ``scores``
at full precision (``runpy.run_path("eval.py")`` then ``scores[...]``; the
printout rounds to 2 decimals), in a scratch folder holding copies of the
fixture files:

* A: ``python eval.py --tier testdev_all --consistency`` with
  ``testdev_all_{questions,choices,predictions}.json`` (predictions as written);
* B: ``python convert_gqa_for_eval.py --src llava_answers.jsonl --dst
  testdev_balanced_predictions.json`` then ``python eval.py --tier
  testdev_balanced`` (no choices file: eval.py prints validity / plausibility 0);
* C: the same conversion to ``testdev_all_predictions.json``, then
  ``python eval.py --tier testdev_all --consistency`` with the choices file.

The fixture (45 questions, 5 unbalanced) holds ``"yes "``, ``"Yes"``, ``"No."``,
``"no.."``, articles, ``""``, near misses, "Common" questions for validity,
entailed questions (some unbalanced), steps with ``exist`` / ``query: name`` /
``choose name`` operations, and double spaces / tabs in questions.
No image file exists: eval.py opens none.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks import gqa
from unified_ar.eval.benchmarks.base import BenchmarkOptions
from unified_ar.eval.predictions import read_benchmark_predictions
from unified_ar.eval.vqa_runner import main as eval_vqa

FIX = Path(__file__).parent / "fixtures" / "conformance" / "gqa"

COUNTS = {"structural": {"choose": 4, "compare": 6, "logical": 2, "query": 21, "verify": 7},
          "semantic": {"attr": 20, "cat": 5, "global": 4, "obj": 6, "rel": 5},
          "steps": {"1": 10, "2": 22, "3": 8},
          "words": {"3": 1, "4": 9, "5": 11, "6": 9, "7": 3, "8": 1, "9": 2, "10": 3, "13": 1}}

# run A: GQA results format, compared as written
AS_WRITTEN = {
    "accuracy": 67.5, "binary": 73.68421052631578, "open": 61.904761904761905,
    "structural": {"choose": 100.0, "compare": 83.33333333333334, "logical": 50.0, "query": 61.904761904761905,
                   "verify": 57.14285714285714},
    "semantic": {"attr": 70.0, "cat": 80.0, "global": 75.0, "obj": 50.0, "rel": 60.0},
    "steps": {"1": 70.0, "2": 63.63636363636363, "3": 75.0},
    "words": {"3": 0.0, "4": 55.55555555555556, "5": 63.63636363636363, "6": 77.77777777777779,
              "7": 66.66666666666666, "8": 100.0, "9": 100.0, "10": 66.66666666666666, "13": 100.0},
    "distribution": 0.009782608695652175, "validity": 70.0, "plausibility": 67.5, "consistency": 13.333333333333334,
}
# runs B and C: LLaVA answers through convert_gqa_for_eval.py
CLEANED = {
    "accuracy": 67.5, "binary": 68.42105263157895, "open": 66.66666666666666,
    "structural": {"choose": 75.0, "compare": 66.66666666666666, "logical": 100.0, "query": 66.66666666666666,
                   "verify": 57.14285714285714},
    "semantic": {"attr": 75.0, "cat": 60.0, "global": 75.0, "obj": 50.0, "rel": 60.0},
    "steps": {"1": 50.0, "2": 72.72727272727273, "3": 75.0},
    "words": {"3": 0.0, "4": 55.55555555555556, "5": 72.72727272727273, "6": 77.77777777777779,
              "7": 66.66666666666666, "8": 0.0, "9": 100.0, "10": 66.66666666666666, "13": 100.0},
    "distribution": 0.006521739130434783,
}
RUN_B = {**CLEANED, "validity": None, "plausibility": None, "consistency": None}  # eval.py: 0.00 / not asked
RUN_C = {**CLEANED, "validity": 67.5, "plausibility": 67.5, "consistency": 38.095238095238095}


def _check(metrics: dict, expected: dict) -> None:
    assert metrics["num_questions"] == 40  # the balanced ones only
    assert metrics["counts"] == COUNTS
    for key, value in expected.items():
        if isinstance(value, dict):
            assert metrics[key].keys() == value.keys(), key
            for k, v in value.items():
                assert metrics[key][k] == pytest.approx(v, abs=1e-9), (key, k)
        elif value is None:
            assert metrics[key] is None, key
        else:
            assert metrics[key] == pytest.approx(value, abs=1e-9), key


def _score(name: str, split: str) -> dict:
    options = BenchmarkOptions(split=split)
    return gqa.score(read_benchmark_predictions(gqa, FIX / name, FIX, options), FIX, options)


def test_gqa_format_as_written_cli(capsys):
    assert not list(FIX.glob("images"))
    assert eval_vqa(["--benchmark", "gqa", "--data", str(FIX), "--split", "testdev_all",
                     "--predictions", str(FIX / "testdev_all_predictions.json")]) == 0
    _check(json.loads(capsys.readouterr().out), AS_WRITTEN)


def test_llava_answers_cleaned_balanced():
    _check(_score("llava_answers.jsonl", "testdev_balanced"), RUN_B)


def test_llava_answers_cleaned_all_with_choices():
    _check(_score("llava_answers.jsonl", "testdev_all"), RUN_C)


def test_perturbed_answer_changes_figures(tmp_path):
    rows = json.loads((FIX / "testdev_all_predictions.json").read_text())
    assert rows[0]["prediction"] == "yes"
    rows[0]["prediction"] = "Yes"  # eval.py: wrong as written
    (tmp_path / "p.json").write_text(json.dumps(rows))
    options = BenchmarkOptions(split="testdev_all")
    m = gqa.score(gqa.read_answers(tmp_path / "p.json", FIX, options), FIX, options)
    with pytest.raises(AssertionError):
        _check(m, AS_WRITTEN)
    assert m["accuracy"] == pytest.approx(65.0)


def test_missing_balanced_prediction_and_mixed_formats(tmp_path):
    rows = json.loads((FIX / "testdev_all_predictions.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps(rows[1:]))
    options = BenchmarkOptions(split="testdev_all")
    with pytest.raises(ValueError, match="1 of 40 questions have no prediction"):
        gqa.score(gqa.read_answers(tmp_path / "p.json", FIX, options), FIX, options)
    (tmp_path / "m.json").write_text(json.dumps(rows[:2] + [{"question_id": "x", "text": "y"}]))
    with pytest.raises(ValueError, match="entry 2 needs 'questionId' and 'prediction'"):
        gqa.read_answers(tmp_path / "m.json", FIX, options)
