"""VQA accuracy as vqaEval.py / EvalAI compute it, score-only CLI, resumable sharded runner.

Every expected number is worked out by hand in the comments. With ten human
answers and c of them equal to the prediction, the leave-one-out accuracy is
(c * min(1, (c-1)/3) + (10-c) * min(1, c/3)) / 10: c=1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >=4 -> 1.
"""
from __future__ import annotations

import json

import pytest

from unified_ar.eval.answer_processing import evalai_process, process_punctuation, py2_round, vqa_normalize
from unified_ar.eval.benchmarks.base import BenchmarkOptions
from unified_ar.eval.vqa_accuracy import aggregate, leave_one_out, vqa_question_accuracy
from unified_ar.eval.vqa_runner import evaluate, main


def test_leave_one_out_counts():
    assert leave_one_out("a", ["a"] + ["b"] * 9) == pytest.approx(0.3)
    assert leave_one_out("a", ["a"] * 2 + ["b"] * 8) == pytest.approx(0.6)
    assert leave_one_out("a", ["a"] * 3 + ["b"] * 7) == pytest.approx(0.9)
    assert leave_one_out("a", ["a"] * 4 + ["b"] * 6) == 1.0
    assert leave_one_out("z", ["a"] * 10) == 0.0


@pytest.mark.parametrize("raw, expected", [
    ("two", "2"),            # number words -> digits
    ("the dog", "dog"),      # articles dropped
    ("dont", "don't"),       # contractions restored
    ("Yes.", "yes"),         # trailing period stripped, lower-cased
    ("1,000", "1000"),       # a digit,digit comma makes every mark vanish
    ("3.5", "3.5"),          # a period before a digit stays
    ("red/blue", "red blue"),  # no space next to "/": replaced by a space
    ("red / blue", "red blue"),  # space next to "/": deleted, the spaces then collapse
])
def test_vqa_normalize(raw, expected):
    assert vqa_normalize(raw) == expected


def test_evalai_processor():
    assert evalai_process("Two dogs?") == "2 dogs"       # "?" dropped, then number word
    assert evalai_process("It's a cat") == "it 's cat"   # "'s" split off as EvalAI does
    assert evalai_process("1,000 people") == "1000 people"


def test_period_regex_quirk():
    # "(?!<=\d)" is a look-ahead for the text "<=", so periods after digits go too,
    # and re.UNICODE passed as count removes at most 32 periods.
    assert process_punctuation("5. ") == "5 "
    assert process_punctuation("." * 40) == "." * 8


def test_identical_answers_are_not_normalised():
    # Ten identical "2": vqaEval.py skips normalisation entirely, so the raw
    # prediction "Two" does not match; LLaVA's EvalAI step turns it into "2" first.
    assert vqa_question_accuracy("Two", ["2"] * 10, "none") == 0.0
    assert vqa_question_accuracy("Two", ["2"] * 10, "llava") == 1.0
    # One dissenting human switches normalisation on: "Two" -> "2" matches 9 others.
    assert vqa_question_accuracy("Two", ["2"] * 9 + ["3"], "none") == 1.0


def test_python2_rounding():
    # 15.625 is exact in binary: Python 3 rounds the tie to even (15.62), Python 2 away from zero.
    assert round(15.625, 2) == 15.62
    assert py2_round(15.625, 2) == 15.63
    # 2.675 is really 2.67499999...: both round down.
    assert py2_round(2.675, 2) == 2.67
    # 16 questions scoring 0.6 + 0.9 + 1.0 + 13 x 0 -> 100 * 2.5 / 16 = 15.625 -> 15.63.
    rows = [(0.6, "q", "a"), (0.9, "q", "a"), (1.0, "q", "a")] + [(0.0, "q", "a")] * 13
    assert aggregate(rows).overall == 15.63


# Six questions, one per edge case. Ten answers each, answer_id 1..10.
GT = {
    1: ("yes/no", "is this", ["yes"] * 10),
    2: ("number", "how many", ["2", "2", "two"] + ["3"] * 7),
    3: ("other", "what color is the", ["the red", "red", "red."] + ["blue"] * 7),
    4: ("other", "what is", ["don't", "don't"] + ["no"] * 8),
    5: ("number", "how many", ["1,000"] * 4 + ["1000"] * 6),
    6: ("other", "what is", ["dog", "dog"] + ["cat"] * 8),
}
PRED = {1: "Yes", 2: "two", 3: "Red", 4: "dont", 5: "1,000", 6: "a dog!"}


def write_vqav2(root, split="val2014"):
    questions = {"data_subtype": split, "data_type": "mscoco", "questions": [
        {"question_id": q, "image_id": 100 + q, "question": f"question {q}?"} for q in GT]}
    annotations = {"annotations": [
        {"question_id": q, "image_id": 100 + q, "answer_type": at, "question_type": qt,
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(ans)]}
        for q, (at, qt, ans) in GT.items()]}
    (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(questions))
    (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps(annotations))


# Per question, "none" (official script on the raw answer):
#  1: all ten "yes" identical -> no normalisation; "Yes" != "yes"          -> 0
#  2: humans differ -> "two" -> "2"; "two" -> "2"; 3 matches               -> 0.9
#  3: "the red", "red", "red." -> "red" x3; "Red" -> "red"                  -> 0.9
#  4: "dont" -> "don't"; 2 matches                                          -> 0.6
#  5: "1,000" -> "1000" (digit comma); all ten "1000"                       -> 1.0
#  6: "a dog!" -> "a dog " -> "dog"; 2 matches                              -> 0.6
# overall = 100 * (0 + .9 + .9 + .6 + 1 + .6) / 6 = 100 * 4 / 6 = 66.67
# yes/no 0.0; number (0.9 + 1) / 2 = 95.0; other (0.9 + 0.6 + 0.6) / 3 = 70.0
# "llava": question 1 becomes "yes" first -> 1.0; overall 100 * 5 / 6 = 83.33.
EXPECTED = {
    "none": {"overall": 66.67, "perAnswerType": {"yes/no": 0.0, "number": 95.0, "other": 70.0},
             "perQuestionType": {"is this": 0.0, "how many": 95.0, "what color is the": 90.0, "what is": 60.0}},
    "llava": {"overall": 83.33, "perAnswerType": {"yes/no": 100.0, "number": 95.0, "other": 70.0},
              "perQuestionType": {"is this": 100.0, "how many": 95.0, "what color is the": 90.0, "what is": 60.0}},
}


@pytest.mark.parametrize("mode", ["none", "llava"])
def test_score_only_cli(tmp_path, capsys, mode):
    write_vqav2(tmp_path)
    preds = tmp_path / "results.json"
    preds.write_text(json.dumps([{"question_id": q, "answer": a} for q, a in PRED.items()]))
    rc = main(["--benchmark", "vqav2", "--data", str(tmp_path), "--predictions", str(preds),
               "--answer-processing", mode])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["answer_processing"] == mode
    for key, value in EXPECTED[mode].items():
        assert metrics[key] == value, key


def test_score_only_rejects_incomplete(tmp_path, capsys):
    write_vqav2(tmp_path)
    preds = tmp_path / "results.json"
    preds.write_text(json.dumps([{"question_id": 1, "answer": "yes"}]))
    assert main(["--benchmark", "vqav2", "--data", str(tmp_path), "--predictions", str(preds)]) == 2
    assert "5 of 6 questions have no prediction" in capsys.readouterr().err


class FakeModel:
    """Answers from PRED; can be told to die after some batches, like a killed job."""

    def __init__(self, die_after: int | None = None):
        self.asked: list = []
        self.die_after = die_after

    def __call__(self, batch):
        if self.die_after is not None and len(self.asked) >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.asked.append([s.question_id for s in batch])
        return [PRED[s.question_id] for s in batch]


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    write_vqav2(tmp_path)
    opts = BenchmarkOptions(answer_processing="none")
    full = evaluate(FakeModel(), "vqav2", tmp_path, tmp_path / "full", opts, batch_size=2, progress=False)
    assert full["overall"] == 66.67

    killed = FakeModel(die_after=2)  # answers 4 questions, then dies
    with pytest.raises(KeyboardInterrupt):
        evaluate(killed, "vqav2", tmp_path, tmp_path / "resumed", opts, batch_size=2, progress=False)
    shard = tmp_path / "resumed" / "predictions.rank0-of-1.jsonl"
    with shard.open("a") as f:  # a torn line, as a kill during a write leaves
        f.write('{"question_id": 5, "te')
    second = FakeModel()
    resumed = evaluate(second, "vqav2", tmp_path, tmp_path / "resumed", opts, batch_size=2, progress=False)
    assert second.asked == [[5, 6]]  # only what was missing
    assert resumed == full
    assert (tmp_path / "resumed" / "metrics.md").read_text().startswith("## vqav2")


def test_sharded_merge_is_exact(tmp_path, monkeypatch):
    write_vqav2(tmp_path)
    opts = BenchmarkOptions(answer_processing="none")
    out = tmp_path / "sharded"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")  # rank 1 finishes first: its half alone cannot be scored
    assert evaluate(FakeModel(), "vqav2", tmp_path, out, opts, batch_size=2, progress=False) is None
    monkeypatch.setenv("RANK", "0")
    merged = evaluate(FakeModel(), "vqav2", tmp_path, out, opts, batch_size=2, progress=False)
    assert merged["overall"] == 66.67 and merged["merge_conflicts"] == 0
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in lines] == [1, 2, 3, 4, 5, 6]  # benchmark order, each id once
