"""ScienceQA-IMG conformance: our scorer against LLaVA's ``eval_science_qa.py``, run on the fixture.

Official code run: haotian-liu/LLaVA @ c121f0432da27facab705978f83c4ada465e46fd,
``llava/eval/eval_science_qa.py`` (Python 3, unchanged), in a scratch folder:
``python eval_science_qa.py --base-dir tests/fixtures/conformance/scienceqa
--result-file .../llava_answers.jsonl --output-file out.json --output-result
result.json``. It printed ``Total: 46, Correct: 11, Accuracy: 23.91%,
IMG-Accuracy: 23.68%``; the exact figures are its counts from ``out.json``
(9 of 38 multimodal right, 11 of 46 overall), divided then times 100 as it does.

Fixture: 52 problems (46 test, 6 val; 8 test ones without an image), 2-5
choices, LLaVA's answer-file rows with ``<image>`` in the prompt of the image
questions. Answers: ``A``, ``C. east``, ``The answer is C.``, ``The answer is
A`` (no character after the letter: FAILED), two ``The answer is``, ``" B"`` and
``"C "`` (not stripped: FAILED), ``a``, ``E`` / ``D`` beyond the choices,
``The answer is Z.``, ``(C)``, ``A.``, ``A.B``, ``FAILED``, ``""``, ``The answer
is AB`` (-> A), ``A.\\n``, ``A, B``, a lower-case second "the answer is".
No image file exists: the scorer opens none.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks import scienceqa
from unified_ar.eval.benchmarks.base import BenchmarkOptions
from unified_ar.eval.predictions import read_predictions
from unified_ar.eval.vqa_runner import main as eval_vqa

FIX = Path(__file__).parent / "fixtures" / "conformance" / "scienceqa"
EXPECTED = {"img_accuracy": 9 / 38 * 100, "correct": 9, "num_questions": 38,
            "accuracy": 11 / 46 * 100, "all_correct": 11, "all_questions": 46}


def _check(m: dict) -> None:
    for key, value in EXPECTED.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    assert round(m["img_accuracy"], 2) == 23.68 and round(m["accuracy"], 2) == 23.91  # its printout


def test_llava_answer_file_cli(capsys):
    assert not (FIX / "images").exists()
    assert eval_vqa(["--benchmark", "scienceqa", "--data", str(FIX),
                     "--predictions", str(FIX / "llava_answers.jsonl")]) == 0
    _check(json.loads(capsys.readouterr().out))


def test_image_questions_only_gives_img_accuracy(tmp_path):
    rows = [json.loads(x) for x in (FIX / "llava_answers.jsonl").read_text().splitlines()]
    kept = [r for r in rows if "<image>" in r["prompt"]]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    m = scienceqa.score(read_predictions(tmp_path / "a.jsonl"), FIX, BenchmarkOptions())
    assert m["img_accuracy"] == pytest.approx(EXPECTED["img_accuracy"], abs=1e-12)
    assert "accuracy" not in m  # the text-only questions were not answered


def test_perturbed_answer_changes_figures(tmp_path):
    rows = [json.loads(x) for x in (FIX / "llava_answers.jsonl").read_text().splitlines()]
    assert rows[1]["text"] == "C. east" and "<image>" in rows[1]["prompt"]
    rows[1]["text"] = "C.east"  # not "X. ": FAILED
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = scienceqa.score(read_predictions(tmp_path / "a.jsonl"), FIX, BenchmarkOptions())
    with pytest.raises(AssertionError):
        _check(m)
    assert m["correct"] == 8
