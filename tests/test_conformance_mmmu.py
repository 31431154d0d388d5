"""MMMU scoring against the official MMMU-Benchmark/MMMU eval code, and a 2-image question through a tiny model.

Expected figures: the official scripts of https://github.com/MMMU-Benchmark/MMMU at commit
bb0b95a945998d91dfef37e969e07d49d1139438, folder ``mmmu/`` (utils/eval_utils.py,
utils/data_utils.py, main_parse_and_eval.py, main_eval_only.py, print_results.py), run
unchanged (Python 3, numpy, tabulate) on the fixture ``tests/fixtures/conformance/mmmu/``:

1. raw answers (``responses.jsonl``): per-subject ``output.json`` files built from
   ``questions.json`` (id, question_type, answer, all_choices / index2ans from the options,
   response), then ``python main_parse_and_eval.py --path work/parse --subject ALL`` and
   ``python print_results.py --path work/parse``;
2. parsed answers (``official_output.json``, ``{id: answer}``, MC letters):
   ``python main_eval_only.py --output_path official_output.json --answer_path answer_dict.json``
   (answer_dict.json built from questions.json in the ``answer_dict_val.json`` layout).

The open answers written as list literals (``"['24/7', '3.429']"``) were given to the official
code as lists, as ``answer_dict_val.json`` and the example ``output.json`` files hold them.
Unrounded discipline / overall figures: the official ``calculate_ins_level_acc`` on the
result.json files (what print_results.py rounds to 3 places). print_results.py sums the
subjects in ``os.listdir`` order, we in the official subject order, so overall figures are
compared to 1e-12. The random letter for unparseable MC answers comes from
``random.seed(42)`` set when eval_utils.py is imported, drawn in subject order (8 draws here,
3 of which happen to be right).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from unified_ar.eval.benchmarks import mmmu
from unified_ar.eval.benchmarks.base import BenchmarkOptions
from unified_ar.eval.vqa_runner import main as eval_vqa

FIXTURE = Path(__file__).parent / "fixtures" / "conformance" / "mmmu"
COLUMNS = ("id", "question", "options", "answer", "question_type")

# print_results.py on the raw responses: (num, acc unrounded as in result.json / calculate_ins_level_acc)
RAW_SUBJECTS = {
    "Accounting": (6, 0.5), "Art": (5, 0.2), "Chemistry": (7, 0.5714285714285714),
    "Clinical_Medicine": (6, 0.6666666666666666), "Electronics": (8, 0.25), "Finance": (6, 1.0),
    "History": (5, 0.8), "Math": (7, 0.7142857142857143), "Physics": (6, 0.6666666666666666),
}
RAW_DISCIPLINES = {
    "Art and Design": (5, 0.2), "Business": (12, 0.75), "Science": (20, 0.65),
    "Health and Medicine": (6, 0.6666666666666666), "Humanities and Social Science": (5, 0.8),
    "Tech and Engineering": (8, 0.25),
}
RAW_OVERALL = (56, 0.5892857142857143)
RAW_PRINTED = {"Overall-Art and Design": 0.2, "Overall-Business": 0.75, "Overall-Science": 0.65,
               "Overall-Health and Medicine": 0.667, "Overall-Humanities and Social Science": 0.8,
               "Overall-Tech and Engineering": 0.25, "Overall": 0.589, "Chemistry": 0.571, "Math": 0.714,
               "Physics": 0.667, "Clinical_Medicine": 0.667}
# main_parse_and_eval.py's parsed_output.json: the letter of every MC answer, and every judgement
RAW_LETTERS = {
    "Math_6": "A", "Math_7": "A", "History_1": "C", "History_2": "A", "History_3": "B", "History_5": "B",
    "Chemistry_7": "B", "Art_1": "A", "Art_2": "A", "Art_3": "D", "Art_4": "A", "Art_5": "A", "Accounting_1": "B",
    "Accounting_2": "C", "Accounting_3": "D", "Accounting_4": "B", "Accounting_5": "B", "Accounting_6": "A",
    "Physics_1": "E", "Physics_2": "A", "Physics_5": "A", "Physics_6": "C", "Electronics_8": "B",
    "Clinical_Medicine_1": "C", "Clinical_Medicine_6": "C", "Finance_6": "A",
}
RAW_WRONG = {
    "Math_5", "Math_6", "History_5", "Chemistry_1", "Chemistry_4", "Chemistry_6", "Art_2", "Art_3", "Art_4",
    "Art_5", "Accounting_4", "Accounting_5", "Accounting_6", "Physics_2", "Physics_6", "Electronics_1",
    "Electronics_3", "Electronics_4", "Electronics_5", "Electronics_7", "Electronics_8", "Clinical_Medicine_1",
    "Clinical_Medicine_5",
}
# main_eval_only.py on official_output.json: evaluation_result and its printable_results
PARSED_SUBJECTS = {
    "Accounting": (6, 0.5), "Art": (5, 0.6), "Chemistry": (7, 0.5714285714285714),
    "Clinical_Medicine": (6, 0.6666666666666666), "Electronics": (8, 0.5), "Finance": (6, 0.6666666666666666),
    "History": (5, 1.0), "Math": (7, 0.7142857142857143), "Physics": (6, 0.8333333333333334),
}
PARSED_DISCIPLINES = {
    "Art and Design": (5, 0.6), "Business": (12, 0.5833333333333334), "Science": (20, 0.7),
    "Health and Medicine": (6, 0.6666666666666666), "Humanities and Social Science": (5, 1.0),
    "Tech and Engineering": (8, 0.5),
}
PARSED_OVERALL = (56, 0.6607142857142857)
PARSED_PRINTED = {"Overall-Business": 0.583, "Finance": 0.667, "Physics": 0.833, "Overall": 0.661}


def write_mmmu(root: Path, rows: list[dict], split: str = "validation", images: dict | None = None) -> Path:
    """HF ``MMMU/MMMU`` layout: ``root/{subject}/{split}-00000-of-00001.parquet``; ``images``
    maps (id, k) -> PNG bytes (every other image_k is null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = images or {}
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    for subject, mine in by_subject.items():
        data = {c: pa.array([r[c] for r in mine], pa.string()) for c in COLUMNS}
        for k in range(1, 8):
            cells = [{"bytes": images[(r["id"], k)], "path": f"{r['id']}_{k}.png"} if (r["id"], k) in images else None
                     for r in mine]
            data[f"image_{k}"] = pa.array(cells, image_type)
        data["subfield"] = pa.array(["fixture"] * len(mine), pa.string())
        (root / subject).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(data), root / subject / f"{split}-00000-of-00001.parquet")
    return root


@pytest.fixture()
def data(tmp_path):
    return write_mmmu(tmp_path / "MMMU", json.loads((FIXTURE / "questions.json").read_text()))


def _cli(capsys, *args) -> dict:
    assert eval_vqa(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def _check(metrics: dict, subjects: dict, disciplines: dict, overall: tuple) -> None:
    assert {s: (v["num"], v["acc"]) for s, v in metrics["subjects"].items()} == subjects
    assert {d: (v["num"], v["acc"]) for d, v in metrics["disciplines"].items()} == disciplines
    assert metrics["overall"]["num"] == overall[0]
    assert metrics["overall"]["acc"] == pytest.approx(overall[1], abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(100 * overall[1], abs=1e-10)


def _printed(metrics: dict) -> dict:
    out = {f"Overall-{d}": round(v["acc"], 3) for d, v in metrics["disciplines"].items()}
    out.update({s: round(v["acc"], 3) for s, v in metrics["subjects"].items()})
    out["Overall"] = round(metrics["overall"]["acc"], 3)
    return out


def test_raw_answers_match_main_parse_and_eval(data, capsys):
    metrics = _cli(capsys, "--benchmark", "mmmu", "--data", str(data),
                   "--predictions", str(FIXTURE / "responses.jsonl"))
    _check(metrics, RAW_SUBJECTS, RAW_DISCIPLINES, RAW_OVERALL)
    assert metrics["random_choices"] == 8 and metrics["num_questions"] == 56
    printed = _printed(metrics)
    assert {k: printed[k] for k in RAW_PRINTED} == RAW_PRINTED


def test_each_parsed_letter_and_judgement_matches(data):
    predictions = mmmu.read_answers(FIXTURE / "responses.jsonl", data, BenchmarkOptions())
    judged = {k.removeprefix("validation_"): v for k, v in mmmu.judge(predictions, data).items()}
    assert {k: v["parsed"] for k, v in judged.items() if isinstance(v["parsed"], str)} == RAW_LETTERS
    assert {k for k, v in judged.items() if not v["correct"]} == RAW_WRONG


def test_official_output_json_matches_main_eval_only(data, capsys):
    metrics = _cli(capsys, "--benchmark", "mmmu", "--data", str(data),
                   "--predictions", str(FIXTURE / "official_output.json"))
    _check(metrics, PARSED_SUBJECTS, PARSED_DISCIPLINES, PARSED_OVERALL)
    assert metrics["random_choices"] == 0
    printed = _printed(metrics)
    assert {k: printed[k] for k in PARSED_PRINTED} == PARSED_PRINTED


def test_official_parse_and_eval_output_json_is_read(data, tmp_path):
    """The official per-subject output.json list ([{"id", "response", ...}]) is accepted too."""
    rows = [json.loads(line) for line in (FIXTURE / "responses.jsonl").read_text().splitlines()]
    path = tmp_path / "output.json"
    path.write_text(json.dumps([{"id": r["question_id"], "question_type": "x", "response": r["text"]} for r in rows]))
    metrics = mmmu.score(mmmu.read_answers(path, data, BenchmarkOptions()), data)
    _check(metrics, RAW_SUBJECTS, RAW_DISCIPLINES, RAW_OVERALL)


def test_one_changed_answer_changes_the_figures(data):
    predictions = mmmu.read_answers(FIXTURE / "responses.jsonl", data, BenchmarkOptions())
    predictions["validation_Electronics_4"] = "10 ohms"  # was empty: now right
    metrics = mmmu.score(predictions, data)
    assert metrics["subjects"]["Electronics"]["correct"] == 3
    assert metrics["overall"]["acc"] == pytest.approx(34 / 56)


def test_the_random_letter_follows_the_official_stream(data):
    """Dropping the first unparseable answer (Accounting_6) shifts every later draw."""
    predictions = mmmu.read_answers(FIXTURE / "responses.jsonl", data, BenchmarkOptions())
    drawn = {k: v["parsed"] for k, v in mmmu.judge(predictions, data).items() if v["random"]}
    assert drawn["validation_Clinical_Medicine_6"] == "C" and drawn["validation_Physics_2"] == "A"
    predictions["validation_Accounting_6"] = "B"
    drawn = {k: v["parsed"] for k, v in mmmu.judge(predictions, data).items() if v["random"]}
    assert "validation_Accounting_6" not in drawn
    assert drawn["validation_Clinical_Medicine_6"] == "A" and drawn["validation_Physics_2"] == "B"


def test_errors_name_the_problem(data, tmp_path, capsys):
    predictions = mmmu.read_answers(FIXTURE / "responses.jsonl", data, BenchmarkOptions())
    del predictions["validation_Math_3"]
    with pytest.raises(ValueError, match="1 of 56 questions have no prediction.*validation_Math_3"):
        mmmu.score(predictions, data)
    with pytest.raises(ValueError, match="test split has no public answers"):
        mmmu.score(predictions, data, BenchmarkOptions(split="test"))
    with pytest.raises(FileNotFoundError, match="Accounting/dev-00000-of-00001.parquet"):
        mmmu.score(predictions, data, BenchmarkOptions(split="dev"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"validation_Math_1": ["A"]}))
    assert eval_vqa(["--benchmark", "mmmu", "--data", str(data), "--predictions", str(bad)]) == 2
    assert "bad.json: question validation_Math_1: the answer is list, not a string" in capsys.readouterr().err


def test_prompts_follow_construct_prompt_and_place_images(tmp_path):
    rows = json.loads((FIXTURE / "questions.json").read_text())
    pngs = {(r["id"], k): _png(k) for r in rows for k in range(1, 6)}
    samples = {s.key: s for s in mmmu.load(write_mmmu(tmp_path / "m", rows, images=pngs))}
    assert len(samples) == 56 and list(samples)[0] == "validation_Accounting_1"  # official subject order
    assert samples["validation_Accounting_2"].prompt == (
        "<image>\nWhich entry is correct?\n(A) $6\n(B) $7\n(C) $8\n(D) $9\n\n"
        "Answer with the option's letter from the given choices directly.")
    assert samples["validation_Finance_1"].prompt == (
        "<image>\nWhat is the present value?\nAnswer the question using a single word or phrase.")
    math = samples["validation_Math_6"]
    assert math.prompt.startswith("Which graph in <image> is convex?\n(A) <image>\n(B) <image>\n(C) <image>\n")
    assert math.metadata["images"] == [1, 2, 3, 4, 5]
    assert [img.size for img in math.load_images()] == [(8 + k, 8) for k in range(1, 6)]
    custom = mmmu.load(tmp_path / "m", BenchmarkOptions(multiple_choice_suffix="", short_answer_suffix="Short."))
    by_id = {s.key: s for s in custom}
    assert by_id["validation_Accounting_2"].prompt.endswith("(D) $9")
    assert by_id["validation_Finance_1"].prompt.endswith("value?\nShort.")


def test_every_marker_gets_its_image_in_order():
    text, refs = mmmu.place_images("<image 2> then <image 1>\n(A) <image 2>", {1, 2}, "q")
    assert (text, refs) == ("<image> then <image>\n(A) <image>", [2, 1, 2])
    assert mmmu.place_images("no marker", {1, 3}, "q") == ("<image>\nno marker", [1])
    assert mmmu.place_images("no image", set(), "q") == ("no image", [])


def test_a_marker_without_its_image_is_an_error(tmp_path):
    rows = [{"id": "validation_Art_1", "subject": "Art", "question": "Compare <image 1> and <image 2>.",
             "options": "['same', 'different']", "answer": "A", "question_type": "multiple-choice"}]
    root = write_mmmu(tmp_path / "m", rows, images={("validation_Art_1", 1): _png(1)})
    with pytest.raises(ValueError, match="validation_Art_1: the text refers to <image 2> but image_2 is empty"):
        mmmu.load(root)


def test_submission_parses_letters_and_keeps_open_answers(tmp_path):
    rows = [{"id": "test_Art_1", "subject": "Art", "question": "Q <image 1>", "options": "['x', 'y']",
             "answer": "?", "question_type": "multiple-choice"},
            {"id": "test_Art_2", "subject": "Art", "question": "Q <image 1>", "options": "[]",
             "answer": "?", "question_type": "open"}]
    root = write_mmmu(tmp_path / "m", rows, split="test")
    info = mmmu.write_submission({"test_Art_1": "The answer is (B).", "test_Art_2": "12 cm"}, root,
                                 tmp_path / "up.json", BenchmarkOptions(split="test"))
    assert info["questions"] == 2
    assert json.loads((tmp_path / "up.json").read_text()) == {"test_Art_1": "B", "test_Art_2": "12 cm"}


def _png(k: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8 + k, 8), (40 * k, 255 - 40 * k, 90)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_two_image_question_runs_through_a_tiny_model(tmp_path, capsys, monkeypatch):
    from unified_helpers import tiny_model

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from unified_ar.sampling import answer_questions

    model_dir = tmp_path / "model"
    model = tiny_model(tmp_path / "tok")
    model.save_pretrained(model_dir)
    codes = torch.zeros(model.num_image_tokens, dtype=torch.long)
    with pytest.raises(ValueError, match="question 0: 1 <image> marker"):
        answer_questions(model, [[codes, codes]], ["<image> and what?"])
    assert len(answer_questions(model, [[codes, codes], codes], ["<image> or <image>?", "plain"],
                                max_new_tokens=2)) == 2
    rows = [{"id": "validation_Art_1", "subject": "Art", "question": "Which of these is red?",
             "options": "['<image 1>', '<image 2>']", "answer": "A", "question_type": "multiple-choice"},
            {"id": "validation_Art_2", "subject": "Art", "question": "What colour is <image 1>?",
             "options": "[]", "answer": "red", "question_type": "open"}]
    images = {("validation_Art_1", 1): _png(1), ("validation_Art_1", 2): _png(2), ("validation_Art_2", 1): _png(3)}
    root = write_mmmu(tmp_path / "m", rows, images=images)
    samples = mmmu.load(root)
    assert samples[0].prompt.startswith("Which of these is red?\n(A) <image>\n(B) <image>\n")
    assert len(samples[0].image) == 2 and samples[0].metadata["images"] == [1, 2]
    metrics = _cli(capsys, "--model", str(model_dir), "--benchmark", "mmmu", "--data", str(root),
                   "--batch-size", "2", "--max-new-tokens", "2", "--out", str(tmp_path / "run"))
    assert metrics["num_questions"] == 2 and set(metrics["subjects"]) == {"Art"}
    lines = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in lines] == ["validation_Art_1", "validation_Art_2"]
