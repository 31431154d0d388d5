"""VQAv2 conformance: our three ``--answer-processing`` modes against the official scripts.

Fixture ``tests/fixtures/conformance/vqav2/`` (written by hand-made cases, 71 questions
in the official questions / annotations format, ten answers each with distinct
``answer_id`` except one question whose four identical answer dicts share one):
``results.json`` (EvalAI results ``[{"question_id", "answer"}]``) and
``llava_answers.jsonl`` (LLaVA ``model_vqa_loader.py`` answer lines, same answers).
Cases: identical humans (no normalisation), trailing periods, the 32-period limit,
punctuation deleted vs. spaced, ``digit,digit`` commas, number words, articles,
contractions (capitalised keys), ``'s``, newlines / tabs / runs of spaces, empty and
gibberish answers, ASCII-only ``\\d``, Python 2 ``lower()`` (``İ``, final sigma) and
whitespace (U+180E), duplicate answer dicts, and a question type of 16 questions whose
percentage is the exact tie 15.625 (Python 2 rounds it to 15.63).

Expected figures were produced, with no image present, by:

* ``none``: GT-Vision-Lab/VQA @ a013f0043c1e2cdc995922dfe257f7149aa9af06,
  ``PythonHelperTools/vqaTools/vqa.py`` + ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``
  run unchanged under Python 2.7.18 (so Python 2 ``round`` and ``unicode`` semantics
  are the real ones): ``vqa = VQA(ann, ques); res = vqa.loadRes(results.json, ques);
  e = VQAEval(vqa, res, n=2); e.evaluate()`` -> ``e.accuracy``.
* ``llava``: haotian-liu/LLaVA @ c121f0432da27facab705978f83c4ada465e46fd,
  ``scripts/convert_vqav2_for_submission.py --dir D --ckpt fixture --split val`` (Python 3,
  ``llava/eval/m4c_evaluator.py`` ``EvalAIAnswerProcessor``) on ``llava_answers.jsonl`` as
  ``merge.jsonl`` with a question file listing the fixture's ids, then the Python 2 run above
  on its upload file.
* ``lmms``: EvolvingLMMs-Lab/lmms-eval @ 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
  ``lmms_eval/tasks/vqav2/utils.py`` ``vqav2_process_results(doc, [answer])`` (with
  ``_task_utils/vqa_eval_metric.py``) on a deep copy of each annotation, aggregated with
  ``lmms_eval.api.metrics.mean`` (``sum / len``); lmms-eval reports only the overall
  ``exact_match``; the per-type figures are the same mean over each type's questions.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks.base import BenchmarkOptions, get_benchmark
from unified_ar.eval.predictions import read_predictions
from unified_ar.eval.vqa_runner import main

FIXTURE = Path(__file__).parent / "fixtures" / "conformance" / "vqav2"

EXPECTED = {
    "none": {"overall": 62.54, "perAnswerType": {"number": 82.31, "other": 60.2, "yes/no": 42.86},
             "perQuestionType": {"are there": 0.0, "does the": 100.0, "how many": 79.09, "is the": 33.33,
                                 "is this": 50.0, "what color is the": 85.0, "what is the": 85.0,
                                 "what number is": 100.0, "what sport is": 33.33, "what time": 100.0,
                                 "which tie": 15.63}},
    "llava": {"overall": 64.37, "perAnswerType": {"number": 90.0, "other": 54.9, "yes/no": 85.71},
              "perQuestionType": {"are there": 100.0, "does the": 100.0, "how many": 88.18, "is the": 100.0,
                                  "is this": 50.0, "what color is the": 85.0, "what is the": 71.79,
                                  "what number is": 100.0, "what sport is": 66.67, "what time": 100.0,
                                  "which tie": 15.63}},
}
# lmms-eval's fractions (x 100 for our percentages)
LMMS = {"overall": 0.6816901408450703,
        "perAnswerType": {"number": 0.9000000000000001, "other": 0.6215686274509803, "yes/no": 0.7142857142857143},
        "perQuestionType": {"are there": 1.0, "does the": 0.0, "how many": 0.881818181818182, "is the": 1.0,
                            "is this": 0.5, "what color is the": 0.85, "what is the": 0.8142857142857142,
                            "what number is": 1.0, "what sport is": 1.0, "what time": 1.0, "which tie": 0.15625}}


@pytest.fixture(autouse=True)
def no_images(monkeypatch):
    """Scoring must never open an image: any attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened while scoring")
    monkeypatch.setattr("PIL.Image.open", refuse)


def check(metrics: dict, mode: str) -> None:
    if mode == "lmms":
        assert metrics["overall"] == pytest.approx(100 * LMMS["overall"], abs=1e-9)
        for key in ("perAnswerType", "perQuestionType"):
            assert metrics[key].keys() == LMMS[key].keys()
            for name, value in LMMS[key].items():
                assert metrics[key][name] == pytest.approx(100 * value, abs=1e-9), (key, name)
        return
    for key, value in EXPECTED[mode].items():
        assert metrics[key] == value, key


@pytest.mark.parametrize("predictions", ["results.json", "llava_answers.jsonl"])
@pytest.mark.parametrize("mode", ["none", "llava", "lmms"])
def test_cli_matches_official(capsys, mode, predictions):
    rc = main(["--benchmark", "vqav2", "--data", str(FIXTURE), "--predictions", str(FIXTURE / predictions),
               "--answer-processing", mode])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_questions"] == 71 and metrics["answer_processing"] == mode
    check(metrics, mode)


def test_one_changed_answer_changes_the_figures(tmp_path):
    """The comparison can fail: one prediction changed ("Yes." -> "no", question 3007) moves the numbers."""
    for name in ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    preds = read_predictions(FIXTURE / "results.json")
    preds["3007"] = "no"
    for mode in ("none", "llava", "lmms"):
        metrics = get_benchmark("vqav2").score(preds, tmp_path, BenchmarkOptions(answer_processing=mode))
        with pytest.raises(AssertionError):
            check(metrics, mode)
