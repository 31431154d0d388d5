"""SEED-Bench (image) conformance: our scorer against LLaVA's ``convert_seed_for_submission.py``.

Official code run: haotian-liu/LLaVA @ c121f0432da27facab705978f83c4ada465e46fd,
``scripts/convert_seed_for_submission.py`` (Python 3, unchanged), in a scratch folder:
``python convert_seed_for_submission.py --annotation-file
tests/fixtures/conformance/seedbench/SEED-Bench.json --result-file
.../llava_answers.jsonl --result-upload-file upload.jsonl``. It printed
``image accuracy: 28.26%`` and per type 50.00 / 20.00 / 20.00 / 40.00 / 20.00 /
20.00 / 40.00 / 20.00 / 20.00 % for types 1-9; the exact values were read from
``eval_single``'s locals (``correct_counts`` / ``type_counts``, ``total_accuracy``)
by a ``sys.settrace`` hook around the unchanged script. ``upload.jsonl`` is the
upload file it wrote (``{"question_id", "prediction"}``).

Fixture: 56 questions (46 image over types 1-9, 10 video), int ids in the answer
file as LLaVA's are; answers ``A``, ``A.``, ``" A"``, ``"A "``, ``a``, ``(A)``,
``The answer is A``, ``""``, the option text, a wrong letter, ``A\\n``, ``E``.
(Every type has a right answer: the script raises KeyError for a type with none.)
No image file exists: the script opens none.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks import seedbench
from unified_ar.eval.benchmarks.base import BenchmarkOptions
from unified_ar.eval.predictions import read_predictions
from unified_ar.eval.vqa_runner import main as eval_vqa

FIX = Path(__file__).parent / "fixtures" / "conformance" / "seedbench"
IMAGE_ACCURACY = 28.26086956521739  # 13 / 46 * 100
PER_TYPE = {"Scene Understanding": (3, 6), "Instance Identity": (1, 5), "Instance Attributes": (1, 5),
            "Instance Location": (2, 5), "Instances Counting": (1, 5), "Spatial Relation": (1, 5),
            "Instance Interaction": (2, 5), "Visual Reasoning": (1, 5), "Text Understanding": (1, 5)}


def _check(m: dict) -> None:
    assert m["image_accuracy"] == pytest.approx(IMAGE_ACCURACY, abs=1e-12)
    assert m["num_questions"] == 46
    assert m["per_type"].keys() == PER_TYPE.keys()
    for name, (right, count) in PER_TYPE.items():
        assert m["per_type"][name] == pytest.approx(right / count * 100, abs=1e-12), name
        assert m["per_type_counts"][name] == count


def test_llava_answer_file_cli(capsys):
    assert not (FIX / "SEED-Bench-image").exists()
    assert eval_vqa(["--benchmark", "seedbench", "--data", str(FIX),
                     "--predictions", str(FIX / "llava_answers.jsonl")]) == 0
    _check(json.loads(capsys.readouterr().out))


def test_upload_file():
    _check(seedbench.score(read_predictions(FIX / "upload.jsonl"), FIX, BenchmarkOptions()))


def test_perturbed_answer_changes_figures(tmp_path):
    rows = [json.loads(x) for x in (FIX / "llava_answers.jsonl").read_text().splitlines()]
    assert rows[0]["text"] == "A"
    rows[0]["text"] = "A "  # as written: wrong
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = seedbench.score(read_predictions(tmp_path / "a.jsonl"), FIX, BenchmarkOptions())
    with pytest.raises(AssertionError):
        _check(m)
    assert m["image_accuracy"] == pytest.approx(12 / 46 * 100)
