"""VizWiz conformance: our three ``--answer-processing`` modes against the official scripts.

Fixture ``tests/fixtures/conformance/vizwiz/``: ``val.json`` (54 questions in VizWiz's
annotation format, ten ``{answer, answer_confidence}`` each), ``results.json`` (the
official results format ``[{"image", "answer"}]``) and ``llava_answers.jsonl`` (LLaVA
``model_vqa_loader.py`` answer lines whose ``question_id`` is the running index of LLaVA's
question file, i.e. the row of ``val.json``). Cases: VizWiz's curly-apostrophe contraction
table (``dont`` -> ``don’t``) and its straight exceptions, human answers compared as
written (case, trailing space, articles, number words), "unanswerable" variants,
punctuation / comma / period rules, empty and gibberish answers, Python 3 Unicode
``\\d`` and ``lower()``, and 16 ``yes/no`` questions whose percentage is the exact tie
15.625 (Python 3 rounds it to 15.62).

Expected figures were produced, with no image present, by:

* ``none``: VizWiz's ``VQAEval`` (Qing Li's VizWiz API from vizwiz.org, Python 3) as
  vendored by OpenGVLab/MM-Interleaved @ ac539d00ead0c438328ac1788849d560703a6b15 (the file
  last changed in 0f49c1ee00648875222791ef48a60f87ead1ab75),
  ``mm_interleaved/utils/vizwiz_metrics_src/vqaEval.py`` + ``vqa.py``, unchanged:
  ``VQAEval(VQA(val.json), VQA(annotation=results), n=2).evaluate()`` -> ``accuracy``
  (its caption metrics were stubbed out; they come after the accuracy and do not touch it).
* ``llava``: haotian-liu/LLaVA @ c121f0432da27facab705978f83c4ada465e46fd,
  ``scripts/convert_vizwiz_for_submission.py --annotation-file llava_val.jsonl
  --result-file llava_answers.jsonl --result-upload-file up.json`` (``llava_val.jsonl``: the
  question file LLaVA's format implies, ``question_id`` = row index), then the run above on ``up.json``.
* ``lmms``: EvolvingLMMs-Lab/lmms-eval @ 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
  ``lmms_eval/tasks/vizwiz_vqa/utils.py`` ``vizwiz_vqa_process_results`` on each row
  (``answers`` as the list of answer strings), aggregated with ``lmms_eval.api.metrics.mean``;
  lmms-eval reports only the overall figure; per answer type is the same mean per type.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks.base import BenchmarkOptions, get_benchmark
from unified_ar.eval.vqa_runner import main

FIXTURE = Path(__file__).parent / "fixtures" / "conformance" / "vizwiz"
EXPECTED = {
    "none": {"overall": 51.3, "perAnswerType": {"number": 86.0, "other": 62.96, "unanswerable": 65.0, "yes/no": 15.62}},
    "llava": {"overall": 44.81, "perAnswerType": {"number": 86.0, "other": 50.0, "unanswerable": 65.0, "yes/no": 15.62}},
}
LMMS = {"overall": 0.5555555555555554,
        "perAnswerType": {"number": 0.9800000000000001, "other": 0.6518518518518519,
                          "unanswerable": 0.8333333333333334, "yes/no": 0.15625}}


@pytest.fixture(autouse=True)
def no_images(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened while scoring")
    monkeypatch.setattr("PIL.Image.open", refuse)


def check(metrics: dict, mode: str) -> None:
    if mode == "lmms":
        assert metrics["overall"] == pytest.approx(100 * LMMS["overall"], abs=1e-9)
        assert metrics["perAnswerType"].keys() == LMMS["perAnswerType"].keys()
        for name, value in LMMS["perAnswerType"].items():
            assert metrics["perAnswerType"][name] == pytest.approx(100 * value, abs=1e-9), name
        return
    for key, value in EXPECTED[mode].items():
        assert metrics[key] == value, key


@pytest.mark.parametrize("predictions", ["results.json", "llava_answers.jsonl"])
@pytest.mark.parametrize("mode", ["none", "llava", "lmms"])
def test_cli_matches_official(capsys, mode, predictions):
    rc = main(["--benchmark", "vizwiz", "--data", str(FIXTURE), "--predictions", str(FIXTURE / predictions),
               "--answer-processing", mode])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_questions"] == 54 and metrics["answer_processing"] == mode
    check(metrics, mode)


def test_running_ids_map_to_rows_in_order():
    bench = get_benchmark("vizwiz")
    by_row = bench.read_answers(FIXTURE / "llava_answers.jsonl", FIXTURE, BenchmarkOptions())
    assert by_row == bench.read_answers(FIXTURE / "results.json", FIXTURE, BenchmarkOptions())
    assert by_row["VizWiz_val_00000000.jpg"] == "dont"


def test_ids_that_do_not_fit_are_named(tmp_path, capsys):
    bad = tmp_path / "answers.jsonl"
    bad.write_text(json.dumps({"question_id": 0, "text": "a"}) + "\n" + json.dumps({"question_id": 54, "text": "b"}) + "\n")
    assert main(["--benchmark", "vizwiz", "--data", str(FIXTURE), "--predictions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "54" in err
    bad.write_text(json.dumps([{"image": "VizWiz_val_99.jpg", "answer": "x"}]))
    bad = bad.rename(tmp_path / "answers.json")
    assert main(["--benchmark", "vizwiz", "--data", str(FIXTURE), "--predictions", str(bad)]) == 2
    assert "VizWiz_val_99.jpg" in capsys.readouterr().err


def test_one_changed_answer_changes_the_figures(tmp_path):
    """The comparison can fail: one prediction changed moves the numbers in every mode."""
    shutil.copy(FIXTURE / "val.json", tmp_path / "val.json")
    bench = get_benchmark("vizwiz")
    preds = bench.read_answers(FIXTURE / "results.json", FIXTURE, BenchmarkOptions())
    preds["VizWiz_val_00000009.jpg"] = "cat"  # was "Unanswerable" against ten "unanswerable"
    for mode in ("none", "llava", "lmms"):
        with pytest.raises(AssertionError):
            check(bench.score(preds, tmp_path, BenchmarkOptions(answer_processing=mode)), mode)
