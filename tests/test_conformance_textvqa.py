"""TextVQA conformance: LLaVA's ``eval_textvqa.py`` (``llava`` = ``none``) and lmms-eval (``lmms``).

Fixture ``tests/fixtures/conformance/textvqa/``: ``TextVQA_0.5.1_val.json`` (42 questions,
three per image, ten answers each; two questions of one image ask the same question with
identical answers), ``results.json`` (``[{"question_id", "answer"}]``) and
``llava_answers.jsonl`` (LLaVA ``model_vqa_loader.py`` lines as for
``llava_textvqa_val_v051_ocr.jsonl``: ``question_id`` is the IMAGE id, the question sits in
``prompt`` in each of the shapes ``eval_textvqa.py``'s ``prompt_processor`` knows, some
upper-cased). Cases: EvalAI processing of both sides (case, hyphens, ``'s``, commas,
periods, the 32-period limit, number words, articles, contractions, whitespace), empty
and gibberish answers, 1/2/3/4 matching humans.

Expected figures were produced, with no image present, by:

* ``llava`` / ``none``: haotian-liu/LLaVA @ c121f0432da27facab705978f83c4ada465e46fd,
  ``python -m llava.eval.eval_textvqa --annotation-file TextVQA_0.5.1_val.json
  --result-file llava_answers.jsonl`` (prints "Accuracy: 81.67%"); the unrounded
  ``100. * TextVQAAccuracyEvaluator().eval_pred_list(pred_list)`` was read by wrapping
  ``eval_pred_list`` around that same run: 81.66666666666667.
* ``lmms``: EvolvingLMMs-Lab/lmms-eval @ 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
  ``lmms_eval/tasks/textvqa/utils.py`` ``textvqa_process_results`` per question, mean
  aggregation (``sum / len``) x 100: 81.66666666666667.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks.base import BenchmarkOptions, get_benchmark
from unified_ar.eval.benchmarks.textvqa import prompt_question
from unified_ar.eval.vqa_runner import main

FIXTURE = Path(__file__).parent / "fixtures" / "conformance" / "textvqa"
EXPECTED = {"llava": 81.66666666666667, "none": 81.66666666666667, "lmms": 81.66666666666667}


@pytest.fixture(autouse=True)
def no_images(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened while scoring")
    monkeypatch.setattr("PIL.Image.open", refuse)


@pytest.mark.parametrize("predictions", ["results.json", "llava_answers.jsonl"])
@pytest.mark.parametrize("mode", ["llava", "none", "lmms"])
def test_cli_matches_official(capsys, mode, predictions):
    rc = main(["--benchmark", "textvqa", "--data", str(FIXTURE), "--predictions", str(FIXTURE / predictions),
               "--answer-processing", mode])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_questions"] == 42
    assert metrics["accuracy"] == pytest.approx(EXPECTED[mode], abs=1e-9)


def test_llava_lines_keyed_by_image_and_question():
    bench = get_benchmark("textvqa")
    llava = bench.read_answers(FIXTURE / "llava_answers.jsonl", FIXTURE, BenchmarkOptions())
    assert llava == bench.read_answers(FIXTURE / "results.json", FIXTURE, BenchmarkOptions())
    assert prompt_question("OCR tokens: a b Question: What IS it? Short answer:") == "what is it?"
    assert prompt_question("Reference OCR token: a\nWhat?\nAnswer briefly.") == "what?"
    assert prompt_question("What?\nReference OCR token: a\nAnswer briefly.") == "what?"
    assert prompt_question("one line only") is None


def test_ids_that_do_not_fit_are_named(tmp_path, capsys):
    image = json.loads((FIXTURE / "llava_answers.jsonl").read_text().splitlines()[0])["question_id"]
    bad = tmp_path / "answers.jsonl"
    bad.write_text(json.dumps({"question_id": image, "prompt": "What is not asked?\nAnswer.", "text": "x"}) + "\n")
    assert main(["--benchmark", "textvqa", "--data", str(FIXTURE), "--predictions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1" in err and image in err and "what is not asked?" in err
    bad.write_text(json.dumps({"question_id": "nope", "text": "x"}) + "\n")
    assert main(["--benchmark", "textvqa", "--data", str(FIXTURE), "--predictions", str(bad)]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_one_changed_answer_changes_the_figure(tmp_path):
    shutil.copy(FIXTURE / "TextVQA_0.5.1_val.json", tmp_path / "TextVQA_0.5.1_val.json")
    bench = get_benchmark("textvqa")
    preds = bench.read_answers(FIXTURE / "results.json", FIXTURE, BenchmarkOptions())
    preds["34602"] = "pepsi"  # was "coca-cola" (0.9)
    for mode in ("llava", "lmms"):
        assert bench.score(preds, tmp_path, BenchmarkOptions(answer_processing=mode))["accuracy"] != \
            pytest.approx(EXPECTED[mode], abs=1e-9)
