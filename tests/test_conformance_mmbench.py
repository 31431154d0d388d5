"""MMBench conformance: our scorer against VLMEvalKit's exact matching and circular evaluation.

Official code run: open-compass/VLMEvalKit @ e8e78f05f3080fe28154f2130321f17951c3be94,
``vlmeval/dataset/utils/multiple_choice.py`` (``mcq_circular_eval``,
``mcq_vanilla_eval``, ``report_acc``) and ``vlmeval/utils/matching_util.py``
(``can_infer``), unchanged, imported from an export of ``vlmeval/smp``,
``vlmeval/utils`` and that file (stub modules for ``validators`` / ``sty``, which
only logging and URL helpers use), with ``model=None`` (``exact_matching``) and
``PRED_FORMAT=tsv``. The driver does what ``ImageMCQDataset.evaluate_heuristic``
does before them (int index, sort, ``str(prediction)``, lower-cased non-letter
columns): meta = ``mmbench_legacy.tsv`` (the fixture's questions with LLaVA's
rotations as circular copies, index + r*1e6), predictions =
``predictions_by_index.jsonl``:
``PRED_FORMAT=tsv python run_vlmeval.py mmbench_legacy.tsv predictions_by_index.jsonl``.
Vanilla figures are its ``PRINT_VANILLA=1`` block: ``vanilla_0`` taken with its
``g_index == index`` branch (its ``index <= 1e6`` branch would also count
rotation 1 of question 0, index 1000000), ``vanilla_all`` over every row.
``report_acc`` gives fractions and abbreviates l2-categories (``MMB_abbrs``); we
give percentages and the names.

Fixture: 40 questions (2-4 options, 132 rows) answered in LLaVA's
``model_vqa_mmbench.py --all-rounds`` format; answers include ``B``, ``B.``,
``(B)``, ``B) text``, ``Answer: B``, ``I think it is B``, ``**B**``, the option's
text, two letters, lower case, ``""``, ``Z``, refusals, the API-failure text,
gibberish, ``E``, a letter too early in a long answer, an over-long answer, and
options that are substrings of others. The TSV's image cells are not base64:
scoring must not decode them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from unified_ar.eval.benchmarks import mmbench
from unified_ar.eval.benchmarks.base import BenchmarkOptions
from unified_ar.eval.metrics import mmbench_infer
from unified_ar.eval.vqa_runner import main as eval_vqa

FIX = Path(__file__).parent / "fixtures" / "conformance" / "mmbench"
ABBR = {"coarse_perception": "CP", "finegrained_perception (instance-level)": "FP-S",
        "finegrained_perception (cross-instance)": "FP-C", "logic_reasoning": "LR",
        "relation_reasoning": "RR", "attribute_reasoning": "AR"}

# report_acc output (fractions) as VLMEvalKit printed it
CIRCULAR = {"Overall": 0.575, "AR": 0.4, "CP": 0.6, "FP-C": 0.4, "FP-S": 1.0, "LR": 0.2, "RR": 0.4,
            "celebrity_recognition": 1.0, "future_prediction": 0.2, "image_scene": 0.6, "image_style": 0.6,
            "object_localization": 1.0, "physical_property_reasoning": 0.4, "social_relation": 0.4,
            "spatial_relationship": 0.4}
VANILLA_0 = {"Overall": 0.725, "AR": 0.6, "CP": 0.7, "FP-C": 0.8, "FP-S": 1.0, "LR": 0.6, "RR": 0.4,
             "celebrity_recognition": 1.0, "future_prediction": 0.6, "image_scene": 0.6, "image_style": 0.8,
             "object_localization": 1.0, "physical_property_reasoning": 0.6, "social_relation": 0.4,
             "spatial_relationship": 0.8}
VANILLA_ALL = {"Overall": 0.6818181818181818, "AR": 0.4117647058823529, "CP": 0.7878787878787878, "FP-C": 0.625,
               "FP-S": 1.0, "LR": 0.35294117647058826, "RR": 0.5, "celebrity_recognition": 1.0,
               "future_prediction": 0.35294117647058826, "image_scene": 0.6875, "image_style": 0.8823529411764706,
               "object_localization": 1.0, "physical_property_reasoning": 0.4117647058823529, "social_relation": 0.5,
               "spatial_relationship": 0.625}


def _as_report(overall: float, groups: dict) -> dict:
    """Our figures in report_acc's shape (fractions, abbreviated l2 names)."""
    out = {"Overall": overall / 100}
    out.update({ABBR[k]: v / 100 for k, v in groups["l2-category"].items()})
    out.update({k: v / 100 for k, v in groups["category"].items()})
    return out


def _check(m: dict) -> None:
    assert m["questions"] == 40 and m["rows"] == 132
    for ours, theirs in ((_as_report(m["circular_accuracy"], m), CIRCULAR),
                         (_as_report(m["vanilla_accuracy"], m["vanilla"]), VANILLA_0),
                         (_as_report(m["vanilla_all_accuracy"], m["vanilla_all"]), VANILLA_ALL)):
        assert ours.keys() == theirs.keys()
        for k, v in theirs.items():
            assert ours[k] == pytest.approx(v, abs=1e-11), k


def test_llava_all_rounds_file_cli(capsys, monkeypatch):
    monkeypatch.setattr("unified_ar.eval.benchmarks.mmbench.base64_image",
                        lambda data: pytest.fail("scoring decoded an image"))
    assert eval_vqa(["--benchmark", "mmbench", "--data", str(FIX),
                     "--predictions", str(FIX / "llava_all_rounds.jsonl")]) == 0
    _check(json.loads(capsys.readouterr().out))


def test_tsv_with_circular_copies_and_indexed_answers():
    options = BenchmarkOptions(split="legacy")
    m = mmbench.score(mmbench.read_answers(FIX / "predictions_by_index.jsonl", FIX, options), FIX, options)
    _check(m)


def test_llava_rotation_matches_ours():
    """LLaVA's round r lists options[r:] + options[:r] under A, B, ...: the rows we ask."""
    asked = {r["index"]: r["options"] for r in mmbench._asked(FIX, BenchmarkOptions())}
    for line in (FIX / "llava_all_rounds.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert asked[row["question_id"] + row["round_id"] * 1_000_000] == row["options"]


def test_can_infer_cases():
    ch = {"A": "red", "B": "dark red", "C": "blue"}
    cases = {"B": "B", "B.": "B", "(B)": "B", "B) dark red": "B", "Answer: B": "B", "I think it is B": "B",
             "**B**": "B", "blue": "C", "dark red": None, "A or B": None, "b": None, "": None, "Z": "Z",
             "Cannot determine the answer": "Z", "the answer is c": "C", "answer is apple": "A",
             "B is my choice since it looks right": None, "D": None}
    for text, want in cases.items():
        assert mmbench_infer(text, dict(ch)) == want, text


def test_perturbed_answer_changes_figures(tmp_path):
    lines = (FIX / "llava_all_rounds.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    assert row["text"] == "A"  # question 0, round 0: right; every round of it is right
    row["text"] = "A B"
    (tmp_path / "a.jsonl").write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    m = mmbench.score(mmbench.read_answers(tmp_path / "a.jsonl", FIX, BenchmarkOptions()), FIX, BenchmarkOptions())
    with pytest.raises(AssertionError):
        _check(m)
    assert m["circular_accuracy"] == pytest.approx(55.0)


def test_bad_answer_rows(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"question_id": 0, "round_id": 1, "text": "A"}) + "\n")
    with pytest.raises(ValueError, match="already holds the circular copies"):
        mmbench.read_answers(tmp_path / "a.jsonl", FIX, BenchmarkOptions(split="legacy"))
    (tmp_path / "b.jsonl").write_text(json.dumps({"question_id": 0, "answer": "A"}) + "\n")
    with pytest.raises(ValueError, match=r"b.jsonl:1: an answer needs 'question_id' and 'text'"):
        mmbench.read_answers(tmp_path / "b.jsonl", FIX, BenchmarkOptions())
