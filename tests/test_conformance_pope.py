"""POPE conformance: our scorer against LLaVA's ``llava/eval/eval_pope.py``, run on the fixture.

Official code run (Python 3, unchanged): haotian-liu/LLaVA @
c121f0432da27facab705978f83c4ada465e46fd, ``llava/eval/eval_pope.py``, in a
scratch folder, as ``scripts/v1_5/eval/pope.sh`` calls it::

    python eval_pope.py --annotation-dir tests/fixtures/conformance/pope/coco \\
        --question-file tests/fixtures/conformance/pope/llava_pope_test.jsonl \\
        --result-file tests/fixtures/conformance/pope/llava_answers.jsonl

Figures below are its printout (full precision); the per-answer decisions
(``PARSED``) are the ``answer['text']`` its ``eval_pope`` function leaves after
parsing each category's answers.

Fixture: synthetic, written for this test (no text of POPE's or COCO's):
``coco_pope_{category}.json`` with the layout of POPE's ``output/coco`` files
(AoiDragon/POPE @ e3e39262c85a6a83f26cf5094022a782cb0df58d, the version
LLaVA-1.5 used): 16 lines per category, ids 1..16, three images
(``scene_000123.jpg`` ...) shared by the three files, 6 + 6 + 4 questions
"Is there a/an {object} in the image?" (one with a typo, as POPE has), labels
yes/no alternating, the "yes" objects the same in every category; 48
questions. ``llava_pope_test.jsonl`` is laid out as LLaVA's own question file
(haotian-liu/LLaVA @ 32cebc3809441cc40d8ac7b2855d148308741f2a,
``playground/data/eval/pope/llava_pope_test.jsonl``): adversarial, random,
popular, ids ``10_000_000 * k + question_id``, text + "\\nAnswer the question
using a single word or phrase.", a ``category`` field, each line the image and
question of the coco_pope line it stands for; ``llava_answers.jsonl`` in
LLaVA's answer-file format, in the same order, prompts = the question file's
texts. Answers: ``No.``, ``no,``, ``NO``, ``Not``,
``NOT``, ``not sure``, ``not!``, ``No!``, ``Yes, there is no ...``, ``""``,
gibberish, ``Yes. There is no owl.``, ``There is a yak. No.``, ``"No\\n"``,
``" no"``, ``"No,there is"``, ``"yes,no"``, ``"3.5 no"``, ``"Yes\\tno"``,
``"No ."``, ``"No\\nThere is none"``, ``None``, ``Nope``, ``nO`` ...
No image file exists: eval_pope.py opens none.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks import pope
from unified_ar.eval.metrics import pope_parse
from unified_ar.eval.vqa_runner import main as eval_vqa

FIX = Path(__file__).parent / "fixtures" / "conformance" / "pope"
ANSWERS = FIX / "llava_answers.jsonl"

# eval_pope.py's printout per category: TP FP TN FN, Accuracy, Precision, Recall, F1 score, Yes ratio
OFFICIAL = {
    "adversarial": {"tp": 3, "fp": 6, "tn": 2, "fn": 5, "accuracy": 0.3125, "precision": 0.3333333333333333,
                    "recall": 0.375, "f1": 0.35294117647058826, "yes_ratio": 0.5625, "questions": 16},
    "random": {"tp": 5, "fp": 6, "tn": 2, "fn": 3, "accuracy": 0.4375, "precision": 0.45454545454545453,
               "recall": 0.625, "f1": 0.5263157894736842, "yes_ratio": 0.6875, "questions": 16},
    "popular": {"tp": 5, "fp": 5, "tn": 3, "fn": 3, "accuracy": 0.5, "precision": 0.5,
                "recall": 0.625, "f1": 0.5555555555555556, "yes_ratio": 0.625, "questions": 16},
}
# its one-line summary per category: '%.3f, %.3f, %.3f, %.3f, %.3f' % (f1, acc, precision, recall, yes_ratio)
SUMMARY = {"adversarial": "0.353, 0.312, 0.333, 0.375, 0.562", "random": "0.526, 0.438, 0.455, 0.625, 0.688",
           "popular": "0.556, 0.500, 0.500, 0.625, 0.625"}
# eval_pope's decision per answer, in answer-file order (y = yes, n = no)
PARSED = "nynnyynnyyyynynyyynyyynynnyyynyynyyyyynnynnyynyy"


def _check(metrics: dict) -> None:
    assert metrics["num_questions"] == 48
    assert set(metrics["categories"]) == set(OFFICIAL)
    for category, expected in OFFICIAL.items():
        got = metrics["categories"][category]
        assert set(got) == set(expected), category
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-12), (category, name)
        line = "%.3f, %.3f, %.3f, %.3f, %.3f" % tuple(got[k] for k in ("f1", "accuracy", "precision", "recall", "yes_ratio"))
        assert line == SUMMARY[category]
    for name in ("accuracy", "precision", "recall", "f1", "yes_ratio"):  # ours: mean of the three categories
        assert metrics["mean"][name] == pytest.approx(sum(v[name] for v in OFFICIAL.values()) / 3, abs=1e-12)


def _llava_rows() -> list[dict]:
    return [json.loads(line) for line in ANSWERS.read_text().splitlines()]


def test_parsing_matches_eval_pope_answer_by_answer():
    assert "".join(pope_parse(r["text"])[0] for r in _llava_rows()) == PARSED


def test_cli_scores_llava_answer_file_with_llava_question_file(capsys):
    # data folder as LLaVA's playground/data/eval/pope: coco/ + llava_pope_test.jsonl
    assert eval_vqa(["--benchmark", "pope", "--data", str(FIX), "--predictions", str(ANSWERS)]) == 0
    _check(json.loads(capsys.readouterr().out))


def test_llava_ids_without_question_file(tmp_path):
    shutil.copytree(FIX / "coco", tmp_path / "coco")  # no llava_pope_test.jsonl: the id rule
    _check(pope.score(pope.read_answers(ANSWERS, tmp_path), tmp_path))


def test_our_own_keys(tmp_path, capsys):
    category = {q["question_id"]: q["category"] for q in map(json.loads, (FIX / "llava_pope_test.jsonl").open())}
    ours = [{"question_id": f"{category[r['question_id']]}/{r['question_id'] % 10_000_000}", "prompt": r["prompt"],
             "text": r["text"]} for r in _llava_rows()]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ours))
    assert eval_vqa(["--benchmark", "pope", "--data", str(FIX), "--predictions", str(path)]) == 0
    _check(json.loads(capsys.readouterr().out))


def test_prompts_are_those_of_llava_question_file():
    prompts = {s.key: s.prompt for s in pope.load(FIX)}
    questions = [json.loads(line) for line in (FIX / "llava_pope_test.jsonl").read_text().splitlines()]
    assert {f"{q['category']}/{q['question_id'] % 10_000_000}": q["text"] for q in questions} == prompts


def test_one_changed_answer_changes_the_figures(tmp_path):
    rows = _llava_rows()
    rows[0]["text"] = "Yes"  # adversarial question 1 (label yes): "No" was a false negative
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AssertionError):
        _check(pope.score(pope.read_answers(path, FIX), FIX))


def test_unknown_llava_id_is_one_line_error(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"question_id": 30000001, "text": "yes"}) + "\n")
    with pytest.raises(ValueError, match="answers.jsonl: question_id 30000001 is not a POPE question"):
        pope.read_answers(path, FIX)


def test_question_file_of_other_coco_pope_files_is_refused(tmp_path):
    shutil.copytree(FIX / "coco", tmp_path / "coco")
    questions = (FIX / "llava_pope_test.jsonl").read_text().splitlines()
    questions[0], questions[6] = questions[6], questions[0]  # not the order of coco_pope_adversarial.json
    (tmp_path / "llava_pope_test.jsonl").write_text("\n".join(questions) + "\n")
    with pytest.raises(ValueError, match="llava_pope_test.jsonl entry 1: image"):
        pope.read_answers(ANSWERS, tmp_path)
