"""Benchmark loaders and scorers on tiny fixtures in each official format; expected metrics by hand."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from unified_ar.eval.benchmarks.base import BenchmarkOptions, get_benchmark
from unified_ar.eval.vqa_runner import main as eval_vqa


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _score(name, preds, data, **opts):
    return get_benchmark(name).score({str(k): v for k, v in preds.items()}, data, BenchmarkOptions(**opts))


def test_pope_parsing_and_metrics(tmp_path):
    random = [(1, "yes", "Yes"),                # -> yes: TP
              (2, "yes", "There is no dog."),   # first sentence has "no": FN
              (3, "no", "No, there is not."),   # "No" -> no: TN
              (4, "no", "banana"),              # unparseable -> yes: FP
              (5, "no", "NO"),                  # only "No"/"no"/"not" count: yes, FP
              (6, "yes", "")]                   # empty -> yes: TP
    popular = [(1, "yes", "yes"), (2, "no", "no")]
    for cat, rows in (("random", random), ("popular", popular)):
        (tmp_path / f"coco_pope_{cat}.json").write_text("".join(
            json.dumps({"question_id": q, "image": f"{q}.jpg", "text": f"Is there a thing {q}?", "label": lab}) + "\n"
            for q, lab, _ in rows))
    samples = get_benchmark("pope").load(tmp_path)
    assert samples[0].prompt == "Is there a thing 1?\nAnswer the question using a single word or phrase."
    preds = {f"random/{q}": p for q, _, p in random} | {f"popular/{q}": p for q, _, p in popular}
    m = _score("pope", preds, tmp_path)
    r = m["categories"]["random"]
    # TP=2 FN=1 TN=1 FP=2: acc 3/6, precision 2/4, recall 2/3, F1 = 2*(1/2)(2/3)/(1/2+2/3) = 4/7, yes 4/6
    assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (2, 1, 1, 2)
    assert r["accuracy"] == pytest.approx(0.5) and r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(2 / 3) and r["f1"] == pytest.approx(4 / 7)
    assert r["yes_ratio"] == pytest.approx(4 / 6)
    assert m["categories"]["popular"]["f1"] == 1.0
    assert m["mean"]["accuracy"] == pytest.approx((0.5 + 1.0) / 2)


def test_mme_pairs(tmp_path):
    ex = tmp_path / "existence"
    ex.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (4, 4)).save(ex / f"{name}.jpg")
    (ex / "a.txt").write_text("Is there a cat? Please answer yes or no.\tYes\nIs there a dog? Please answer yes or no.\tNo\n")
    (ex / "b.txt").write_text("Is there a car?\tYes\nIs there a bus?\tNo\n")
    code = tmp_path / "code_reasoning"
    (code / "images").mkdir(parents=True)
    (code / "questions_answers_YN").mkdir()
    for name in ("c", "d"):
        Image.new("RGB", (4, 4)).save(code / "images" / f"{name}.png")
    (code / "questions_answers_YN" / "c.txt").write_text("Prints 1?\tYes\nPrints 2?\tNo\n")
    (code / "questions_answers_YN" / "d.txt").write_text("Prints 3?\tYes\nPrints 4?\tNo\n")
    samples = get_benchmark("mme").load(tmp_path)
    # LLaVA-1.5's llava_mme.jsonl: the yes/no sentence becomes the short-answer suffix on a new line
    assert len(samples) == 8 and samples[0].prompt == "Is there a cat?\nAnswer the question using a single word or phrase."
    assert samples[2].prompt == "Is there a car?\nAnswer the question using a single word or phrase."
    bare = get_benchmark("mme").load(tmp_path, BenchmarkOptions(short_answer_suffix=""))
    assert bare[0].prompt == "Is there a cat? Please answer yes or no."  # no suffix: as written
    preds = {"existence/a.jpg/0": "Yes", "existence/a.jpg/1": "No",          # both right
             "existence/b.jpg/0": "yes, there is",                          # "yes" in the first 4 chars: right
             "existence/b.jpg/1": "I think no",                             # "i th": other, wrong
             "code_reasoning/c.png/0": "no", "code_reasoning/c.png/1": "no",  # wrong, right
             "code_reasoning/d.png/0": "Nope",                              # "nope" has "no": wrong
             "code_reasoning/d.png/1": "No."}                               # "no." has "no": right
    m = _score("mme", preds, tmp_path)
    # existence: acc 3/4 = 75, acc+ 1/2 images = 50 -> 125; code_reasoning: acc 2/4 = 50, acc+ 0 -> 50
    assert m["categories"]["existence"]["score"] == pytest.approx(125.0)
    assert m["categories"]["code_reasoning"]["score"] == pytest.approx(50.0)
    assert m["perception"] == pytest.approx(125.0) and m["cognition"] == pytest.approx(50.0)


def _mmbench_tsv(path, rows):
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    lines = ["\t".join(cols)] + ["\t".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_mmbench_circular_groups(tmp_path):
    img = _png_b64()
    _mmbench_tsv(tmp_path / "mmbench_dev_20230712.tsv", [
        {"index": 0, "question": "Which animal?", "hint": "nan", "A": "cat", "B": "dog", "C": "bird",
         "answer": "B", "category": "attribute", "l2-category": "perception", "image": img},
        {"index": 1, "question": "Which colour?", "hint": "A flag.", "A": "red", "B": "blue",
         "answer": "A", "category": "color", "l2-category": "perception", "image": img},
    ])
    samples = get_benchmark("mmbench").load(tmp_path)
    # question 0 has 3 options -> 3 rotations; question 1 has 2 -> 2
    assert [s.question_id for s in samples] == [0, 1_000_000, 2_000_000, 1, 1_000_001]
    assert samples[1].prompt == ("Which animal?\nA. dog\nB. bird\nC. cat\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert samples[3].prompt.startswith("A flag.\nWhich colour?\nA. red\nB. blue")
    assert samples[0].load_image().size == (4, 4)
    # rotation answers: q0 -> B, A (dog moved first), C; q1 -> A, B (red moved second)
    preds = {0: "B. dog", 1_000_000: "The answer is A.", 2_000_000: "C",  # all right: circular hit
             1: "A", 1_000_001: "A"}                                      # second rotation wrong: miss
    m = _score("mmbench", preds, tmp_path)
    assert m["circular_accuracy"] == 50.0 and m["vanilla_accuracy"] == 100.0
    assert m["category"] == {"attribute": 100.0, "color": 0.0}
    assert m["l2-category"] == {"perception": 50.0}


def test_mmbench_tsv_with_circular_copies(tmp_path):
    img = _png_b64()
    _mmbench_tsv(tmp_path / "mmbench_dev_20230712.tsv", [
        {"index": 5, "question": "Q", "A": "x", "B": "y", "answer": "A", "category": "c", "image": img},
        {"index": 1_000_005, "question": "Q", "A": "y", "B": "x", "answer": "B", "category": "c", "image": img}])
    assert len(get_benchmark("mmbench").load(tmp_path)) == 2  # asked as they are, no new rotations
    m = _score("mmbench", {5: "A", 1_000_005: "A"}, tmp_path)
    assert m["circular_accuracy"] == 0.0 and m["vanilla_accuracy"] == 100.0


def test_scienceqa_img(tmp_path):
    problems = {
        "p1": {"question": "Q1?", "hint": "ctx", "choices": ["x", "y"], "answer": 1, "image": "image.png"},
        "p2": {"question": "Q2?", "hint": "", "choices": ["a", "b", "c"], "answer": 0, "image": "image.png"},
        "p3": {"question": "Q3?", "hint": "", "choices": ["u", "v"], "answer": 0, "image": "image.png"},
        "p4": {"question": "Q4?", "hint": "", "choices": ["s", "t"], "answer": 0, "image": None},
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["p1", "p2", "p3", "p4"]}))
    samples = get_benchmark("scienceqa").load(tmp_path)
    assert [s.question_id for s in samples] == ["p1", "p2", "p3"]  # IMG subset only
    assert samples[0].prompt == ("Context: ctx\nQ1?\nA. x\nB. y\n"
                                 "Answer with the option's letter from the given choices directly.")
    preds = {"p1": "B",                                     # right
             "p2": "A. a",                                  # "X. " prefix: right
             "p3": "The answer is A. The answer is A."}     # two matches: FAILED, wrong
    m = _score("scienceqa", preds, tmp_path)
    assert m["img_accuracy"] == pytest.approx(200 / 3) and m["correct"] == 2


def test_seedbench_image_exact_match(tmp_path):
    def q(qid, dtype, answer, type_id):
        return {"question_id": qid, "data_id": f"{qid}.jpg", "data_type": dtype, "question": f"Q{qid}?",
                "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d", "answer": answer,
                "question_type_id": type_id}
    data = {"question_type": {"Scene Understanding": 1, "Instance Identity": 2},
            "questions": [q("1", "image", "A", 1), q("2", "image", "B", 1), q("3", "video", "A", 1),
                          q("4", "image", "C", 2)]}
    (tmp_path / "SEED-Bench.json").write_text(json.dumps(data))
    assert len(get_benchmark("seedbench").load(tmp_path)) == 3  # the video question is skipped
    m = _score("seedbench", {"1": "A", "2": "B.", "4": " C "}, tmp_path)
    # LLaVA compares row['text'] == answer as written: "B." and " C " are wrong. 1 of 3.
    assert m["image_accuracy"] == pytest.approx(100 / 3)
    assert m["per_type"] == {"Scene Understanding": 50.0, "Instance Identity": 0.0}


def test_gqa_exact_match_and_score_only(tmp_path, capsys):
    def q(image, text, answer, structural):  # the fields GQA's eval.py reads
        return {"imageId": image, "question": text, "answer": answer, "isBalanced": True, "entailed": [],
                "types": {"structural": structural, "semantic": "attr", "detailed": "x"},
                "semantic": [{"operation": "select", "argument": "thing"}], "groups": {"global": None}}
    questions = {"q1": q("n1", "Is it red?", "yes", "verify"), "q2": q("n2", "Which side?", "left", "query"),
                 "q3": q("n3", "What colour?", "red", "query")}
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    preds = tmp_path / "testdev_balanced_predictions.json"  # the official GQA results format
    preds.write_text(json.dumps([{"questionId": "q1", "prediction": "Yes."},    # eval.py: as written, wrong
                                 {"questionId": "q2", "prediction": "the left"},  # wrong
                                 {"questionId": "q3", "prediction": "red"}]))     # right
    assert eval_vqa(["--benchmark", "gqa", "--data", str(tmp_path), "--predictions", str(preds)]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["accuracy"] == pytest.approx(100 / 3)
    assert m["structural"] == {"query": 50.0, "verify": 0.0}
    llava = tmp_path / "answers.jsonl"  # LLaVA's answer file: convert_gqa_for_eval.py cleaning first
    llava.write_text("".join(json.dumps({"question_id": k, "text": t}) + "\n"
                             for k, t in (("q1", "Yes."), ("q2", "the left"), ("q3", "red"))))
    assert eval_vqa(["--benchmark", "gqa", "--data", str(tmp_path), "--predictions", str(llava)]) == 0
    assert json.loads(capsys.readouterr().out)["structural"] == {"query": 50.0, "verify": 100.0}


def test_textvqa_m4c(tmp_path):
    data = {"data": [
        {"question_id": 1, "image_id": "i1", "question": "What brand?", "answers": ["Coca Cola"] * 3 + ["coke"] * 7},
        {"question_id": 2, "image_id": "i2", "question": "How many?", "answers": ["2"] * 10}]}
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    # "coca-cola" -> "coca cola" (no space next to "-": replaced by a space) = 3 humans -> 0.9;
    # "two" -> "2" -> 1.0; accuracy = 100 * 1.9 / 2 = 95
    m = _score("textvqa", {1: "coca-cola", 2: "two"}, tmp_path)
    assert m["accuracy"] == pytest.approx(95.0)


def test_vizwiz_unanswerable(tmp_path):
    rows = [
        {"image": "VizWiz_val_1.jpg", "question": "What is it?", "answer_type": "unanswerable", "answerable": 0,
         "answers": [{"answer": a, "answer_confidence": "yes"}
                     for a in ["unanswerable"] * 3 + ["Unanswerable"] * 3 + ["cat"] * 4]},
        {"image": "VizWiz_val_2.jpg", "question": "What colour?", "answer_type": "other", "answerable": 1,
         "answers": [{"answer": a, "answer_confidence": "yes"} for a in ["red"] * 2 + ["blue"] * 8]},
    ]
    (tmp_path / "val.json").write_text(json.dumps(rows))
    s = get_benchmark("vizwiz").load(tmp_path)[0]
    assert s.question_id == "VizWiz_val_1.jpg"
    assert s.prompt == ("What is it?\nWhen the provided information is insufficient, respond with 'Unanswerable'.\n"
                        "Answer the question using a single word or phrase.")
    # VizWiz never normalises human answers: "Unanswerable" x3 do not match "unanswerable" -> 3 -> 0.9.
    # "Red" -> "red": 2 humans -> 0.6. overall 100 * 1.5 / 2 = 75.
    m = _score("vizwiz", {"VizWiz_val_1.jpg": "Unanswerable", "VizWiz_val_2.jpg": "Red"}, tmp_path)
    assert m["overall"] == 75.0
    assert m["perAnswerType"] == {"unanswerable": 90.0, "other": 60.0}


def test_vqav2_testdev_submission(tmp_path):
    qs = {"data_subtype": "test-dev2015", "questions": [
        {"question_id": 1, "image_id": 1, "question": "How many?"},
        {"question_id": 2, "image_id": 2, "question": "What?"}]}
    (tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json").write_text(json.dumps(qs))
    preds = tmp_path / "answers.jsonl"
    preds.write_text(json.dumps({"question_id": 1, "text": "Two."}) + "\n")
    out = tmp_path / "upload.json"
    assert eval_vqa(["--benchmark", "vqav2", "--data", str(tmp_path), "--split", "test-dev2015",
                     "--predictions", str(preds), "--submission", str(out)]) == 0
    # EvalAI processing ("Two." -> "2"); questions without a prediction get "" as LLaVA's converter does
    assert json.loads(out.read_text()) == [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": ""}]


def test_unknown_benchmark_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("vqa3")
    with pytest.raises(FileNotFoundError, match="GQA questions"):
        get_benchmark("gqa").load(tmp_path)
