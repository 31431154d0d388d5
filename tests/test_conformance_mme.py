"""MME conformance: our scorer against MME's ``eval_tool/calculation.py``, fed by LLaVA's converter.

Official code run (Python 3, unchanged), in a scratch folder laid out as LLaVA's
``scripts/v1_5/eval/mme.sh`` expects (``MME_Benchmark_release_version/`` = a
copy of the fixture's, plus empty ``images/`` folders in the five nested
categories, which the converter asserts exist and never reads;
``answers/fixture.jsonl`` = ``llava_answers.jsonl``):

* haotian-liu/LLaVA @ 32cebc3809441cc40d8ac7b2855d148308741f2a,
  ``playground/data/eval/MME/convert_answer_to_mme.py`` (the copy of LLaVA's
  eval.zip committed there): ``python convert_answer_to_mme.py --experiment fixture``;
* BradyFU/Awesome-Multimodal-Large-Language-Models, branch ``Evaluation`` @
  dd2950902889cd614d4edf606827240166d29381, ``tools/eval_tool.zip`` ->
  ``eval_tool/calculation.py`` (scikit-learn 1.9.1): ``cd eval_tool; python
  calculation.py --results_dir answers/fixture``.

``TOTALS`` and each category's score are its printout; acc, acc+ and the count
of "other" answers are the ``metric_dict`` of each category, read by a subclass
of its ``calculate_metrics`` whose ``compute_metric`` keeps the dict it returns
(calculation.py adds ``acc_plus`` to that dict afterwards). ``PARSED`` is its
``parse_pred_ans`` on the 4th field of every results line, lower-cased, as
``process_result`` calls it.

Fixture: synthetic, written for this test (no text of MME's): two yes/no
questions per image, ground truths "Yes" then "No" as in MME, 2 or 3 images in
each of the 14 categories (62 questions), ``img_0001``-style names, ``.jpg`` in
the perception and OCR folders, ``.png`` in the cognition ones, the same stem in
two or more categories (existence/count, existence/position, the four cognition
folders and OCR), nested (``questions_answers_YN/`` + ``images/``) and flat
folders, two artwork images sharing a question text, questions with a double
space before "Please answer yes or no." and one without its "?"; no image file.
Prompts in the answer file: LLaVA-1.5's form (the form of its
llava_mme.jsonl: "Please answer yes or no." replaced by "\\nAnswer the
question using a single word or phrase."), the question as asked, and the bare
question (the converter adds " Please answer yes or no.", then tries two
spaces; so does LLaVA's form once the converter strips its suffix). Answers: ``YES``,
``NO.``, ``" yes"``, ``"  yes"``, ``eyes``, ``snow``, ``know``, ``Nope``,
``Not``, ``None``, ``nothing``, ``unknown``, ``n``, ``y``, ``ye``, ``""``,
``yesno``, ``noyes``, ``nyes``, ``on``, ``Y es``, ``Noo``, ``yEs``, ``Nah``,
``nein`` ... (no tab or newline: the results txt format cannot hold them).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from unified_ar.eval.benchmarks import mme
from unified_ar.eval.metrics import mme_parse
from unified_ar.eval.vqa_runner import main as eval_vqa

FIX = Path(__file__).parent / "fixtures" / "conformance" / "mme"
DATA = FIX / "MME_Benchmark_release_version"
ANSWERS = FIX / "llava_answers.jsonl"

# category: (acc, acc_plus, score, other_num) from calculation.py
OFFICIAL = {
    "existence": (0.3333333333333333, 0.0, 33.33333333333333, 2),
    "count": (0.5, 0.3333333333333333, 83.33333333333333, 1),
    "position": (0.5, 0.0, 50.0, 1),
    "color": (0.5, 0.0, 50.0, 2),
    "posters": (0.75, 0.5, 125.0, 0),
    "celebrity": (0.5, 0.0, 50.0, 1),
    "scene": (0.5, 0.0, 50.0, 1),
    "landmark": (0.75, 0.5, 125.0, 1),
    "artwork": (0.75, 0.5, 125.0, 1),
    "OCR": (0.5, 0.0, 50.0, 1),
    "commonsense_reasoning": (0.25, 0.0, 25.0, 2),
    "numerical_calculation": (0.25, 0.0, 25.0, 2),
    "text_translation": (0.25, 0.0, 25.0, 0),
    "code_reasoning": (0.75, 0.5, 125.0, 0),
}
TOTALS = {"perception": 741.6666666666666, "cognition": 200.0}  # "total score:" lines
IMAGES = {c: 3 if c in ("existence", "count", "color") else 2 for c in OFFICIAL}
# parse_pred_ans per answer, in answer-file order (y = yes, n = no, o = other)
PARSED = "yyynonnyyoynnonnyonnonyyyoynnnyonnnnonyoynynonyyonnoonyyoonnny"


def _check(metrics: dict) -> None:
    assert metrics["num_questions"] == 62
    assert list(metrics["categories"]) == list(OFFICIAL)  # calculation.py's order
    for category, (acc, acc_plus, score, other) in OFFICIAL.items():
        got = metrics["categories"][category]
        assert got["acc"] == pytest.approx(100 * acc, abs=1e-9), category
        assert got["acc_plus"] == pytest.approx(100 * acc_plus, abs=1e-9), category
        assert got["score"] == score, category  # same float operations, same order
        assert (got["other"], got["images"]) == (other, IMAGES[category]), category
    assert (metrics["perception"], metrics["cognition"]) == (TOTALS["perception"], TOTALS["cognition"])


def _rows() -> list[dict]:
    return [json.loads(line) for line in ANSWERS.read_text().splitlines()]


def test_parsing_matches_parse_pred_ans_answer_by_answer():
    assert "".join(mme_parse(r["text"])[0] for r in _rows()) == PARSED


def test_cli_scores_llava_answer_file_without_images(capsys):
    assert not any(p.suffix in mme.IMAGE_SUFFIXES for p in DATA.rglob("*"))
    assert eval_vqa(["--benchmark", "mme", "--data", str(DATA), "--predictions", str(ANSWERS)]) == 0
    _check(json.loads(capsys.readouterr().out))


def test_our_own_keys(tmp_path, capsys):
    keyed = mme.read_answers(ANSWERS, DATA)
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({"question_id": k, "text": v}) + "\n" for k, v in keyed.items()))
    assert eval_vqa(["--benchmark", "mme", "--data", str(DATA), "--predictions", str(path)]) == 0
    _check(json.loads(capsys.readouterr().out))


def test_load_needs_images_and_keys_agree_with_llava_answers(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image"):
        mme.load(DATA)
    data = tmp_path / "MME_Benchmark_release_version"
    shutil.copytree(DATA, data)
    for answer in _rows():  # LLaVA ids name the image relative to the category folder
        image = data / answer["question_id"]
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (2, 2)).save(image)
    samples = mme.load(data)
    assert [s.key for s in samples if s.category == "scene"][:2] == [
        "scene/scene_val_0001.jpg/0", "scene/scene_val_0001.jpg/1"]
    assert {s.key for s in samples} == set(mme.read_answers(ANSWERS, data))


def test_one_changed_answer_changes_the_figures(tmp_path):
    rows = _rows()
    rows[-1]["text"] = "Yes" if mme_parse(rows[-1]["text"]) == "no" else "No"
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AssertionError):
        _check(mme.score(mme.read_answers(path, DATA), DATA))


def test_unknown_question_is_one_line_error(tmp_path):
    row = dict(_rows()[0], prompt="Is this a question nobody asked?")
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"answers.jsonl entry 1: no question .* for code_reasoning/img_0101.txt"):
        mme.read_answers(path, DATA)
    path.write_text(json.dumps({"question_id": "code_reasoning/img_0101.png", "text": "yes"}) + "\n")
    with pytest.raises(ValueError, match="needs its 'prompt'"):
        mme.read_answers(path, DATA)
