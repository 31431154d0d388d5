"""The Shapes world: determinism, file formats parsed back against the specs, hold-out."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from unified_ar.train.shapes.world import (
    COLORS, GRID, POSITIONS, QUESTION_TYPES, SHAPES, SIZES, Scene, WorldConfig, render,
)
from unified_ar.train.shapes.writer import write_world


def tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path, shapes_world):
    write_world(tmp_path / "a", {"train": 64, "val": 16, "test": 16}, seed=0, config=WorldConfig())
    assert tree_digest(tmp_path / "a") == tree_digest(shapes_world)
    write_world(tmp_path / "b", {"train": 8, "val": 16, "test": 16}, seed=1, config=WorldConfig())
    captions_b = (tmp_path / "b" / "captions_val.jsonl").read_text()
    assert captions_b != (shapes_world / "captions_val.jsonl").read_text()


def test_split_content_independent_of_other_split_sizes(tmp_path, shapes_world):
    write_world(tmp_path / "c", {"train": 20, "val": 16, "test": 4}, seed=0, config=WorldConfig())
    assert (tmp_path / "c" / "captions_val.jsonl").read_text() == (shapes_world / "captions_val.jsonl").read_text()


def check_spec(spec):
    cells = [tuple(o["cell"]) for o in spec["objects"]]
    assert 1 <= len(cells) <= 3 and len(set(cells)) == len(cells)
    for o in spec["objects"]:
        assert o["shape"] in SHAPES and o["color"] in COLORS and o["size"] in SIZES
        assert 0 <= o["cell"][0] < GRID and 0 <= o["cell"][1] < GRID


def test_captions_and_images_match_spec(shapes_world):
    rows = [json.loads(line) for line in (shapes_world / "captions_train.jsonl").read_text().splitlines()]
    assert len(rows) == 64
    config = WorldConfig()
    for row in rows:
        check_spec(row["spec"])
        pixels = np.asarray(Image.open(shapes_world / row["image"]))
        assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, render(Scene.from_dict(row["spec"]), config))
        for o in row["spec"]["objects"]:
            phrase = f"a {o['size']} {o['color']} {o['shape']} in the {POSITIONS[tuple(o['cell'])]}"
            assert phrase in row["caption"]
        colours = {tuple(c) for c in pixels.reshape(-1, 3)}
        assert colours == {(0, 0, 0)} | {COLORS[o["color"]] for o in row["spec"]["objects"]}


def test_llava_conversations(shapes_world):
    convs = json.loads((shapes_world / "conversations_train.json").read_text())
    assert len(convs) == 64
    for conv in convs:
        assert set(conv) == {"id", "image", "conversations"}
        turns = conv["conversations"]
        assert turns and len(turns) % 2 == 0
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        assert (shapes_world / conv["image"]).is_file()


def answer_from_spec(question, spec):
    """An independent reading of each question template against the spec."""
    objs = spec["objects"]
    pos = {v: k for k, v in POSITIONS.items()}
    at = lambda p: next(o for o in objs if tuple(o["cell"]) == pos[p])  # noqa: E731
    q = question.rstrip("?")
    if q.startswith("what color is the object in the "):
        return at(q.removeprefix("what color is the object in the "))["color"]
    if q.startswith("what color is the "):
        (o,) = [o for o in objs if o["shape"] == q.removeprefix("what color is the ")]
        return o["color"]
    if q.startswith("what shape is in the "):
        return at(q.removeprefix("what shape is in the "))["shape"]
    if q.startswith("what shape is the "):
        (o,) = [o for o in objs if o["color"] == q.removeprefix("what shape is the ").removesuffix(" object")]
        return o["shape"]
    if q == "how many objects are there":
        return str(len(objs))
    if q.startswith("how many ") and q.endswith(" objects are there"):
        return str(sum(o["color"] == q.split()[2] for o in objs))
    if q.startswith("how many "):
        return str(sum(o["shape"] + "s" == q.split()[2] for o in objs))
    if q.startswith("is there a "):
        color, shape = q.removeprefix("is there a ").split()
        return "yes" if any(o["color"] == color and o["shape"] == shape for o in objs) else "no"
    if q.startswith("where is the "):
        color, shape = q.removeprefix("where is the ").split()
        (o,) = [o for o in objs if o["color"] == color and o["shape"] == shape]
        return POSITIONS[tuple(o["cell"])]
    if q.startswith("what size is the object in the "):
        return at(q.removeprefix("what size is the object in the "))["size"]
    raise AssertionError(f"unknown question form {question!r}")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_vqa_files_official_format_and_answers(shapes_world, split):
    qfile = json.loads((shapes_world / "vqa" / f"{split}_questions.json").read_text())
    afile = json.loads((shapes_world / "vqa" / f"{split}_annotations.json").read_text())
    specs = {json.loads(l)["image_id"]: json.loads(l)["spec"]
             for l in (shapes_world / f"captions_{split}.jsonl").read_text().splitlines()}
    assert qfile["task_type"] == "Open-Ended" and qfile["data_subtype"] == split
    anns = {a["question_id"]: a for a in afile["annotations"]}
    assert len(anns) == len(qfile["questions"]) > 0
    for q in qfile["questions"]:
        assert set(q) == {"image_id", "question", "question_id"}
        a = anns[q["question_id"]]
        assert set(a) == {"question_id", "image_id", "answer_type", "question_type",
                          "multiple_choice_answer", "answers"}
        assert a["image_id"] == q["image_id"] and a["question_type"] in QUESTION_TYPES
        assert a["answer_type"] in ("yes/no", "number", "other")
        assert len(a["answers"]) == 10 and [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        assert all(x["answer"] == a["multiple_choice_answer"] for x in a["answers"])
        assert a["multiple_choice_answer"] == answer_from_spec(q["question"], specs[q["image_id"]])
    types = {a["question_type"] for a in anns.values()}
    assert types == set(QUESTION_TYPES)


def test_t2i_prompts(shapes_world):
    rows = [json.loads(l) for l in (shapes_world / "t2i_prompts_val.jsonl").read_text().splitlines()]
    captions = [json.loads(l) for l in (shapes_world / "captions_val.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    for r, c in zip(rows, captions):
        assert r["prompt"] == c["caption"] and r["spec"] == c["spec"]
        check_spec(r["spec"])


def test_holdout_respected(tmp_path):
    config = WorldConfig(holdout=["red circle", "blue square", "green triangle"])
    stats = write_world(tmp_path, {"train": 300, "val": 50, "test": 300}, seed=3, config=config)
    for split in ("train", "val"):
        pairs = {f"{o['color']} {o['shape']}" for l in (tmp_path / f"captions_{split}.jsonl").read_text().splitlines()
                 for o in json.loads(l)["spec"]["objects"]}
        assert not pairs & set(config.holdout), split
        assert stats[split]["holdout_pairs_seen"] == []
    assert stats["test"]["holdout_pairs_seen"] == sorted(config.holdout)
    for line in (tmp_path / "captions_test.jsonl").read_text().splitlines():  # every test scene holds one
        spec = json.loads(line)["spec"]
        assert {f"{o['color']} {o['shape']}" for o in spec["objects"]} & set(config.holdout), spec


def test_bad_world_config():
    with pytest.raises(ValueError, match="holdout entry"):
        WorldConfig(holdout=["purple circle"])
    with pytest.raises(ValueError, match="multiple of 3"):
        WorldConfig(image_size=100)


def test_tokenizer_loads_with_specials(world_tokenizer):
    for tok in ("<|image_start|>", "<|image_end|>", "<|image|>"):
        ids = world_tokenizer(tok, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != world_tokenizer.unk_token_id
    assert world_tokenizer.pad_token_id is not None and world_tokenizer.pad_token_id != world_tokenizer.eos_token_id
    text = world_tokenizer.apply_chat_template(
        [{"role": "user", "content": "what color is the circle?"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith(world_tokenizer.bos_token) and text.endswith("<|assistant|>")
    ids = world_tokenizer("a large red circle in the top left.")["input_ids"]
    assert world_tokenizer.unk_token_id not in ids


def test_a_word_after_a_newline_is_spelled_as_mid_sentence(world_tokenizer):
    # LLaVA's "<image>\nwhat ..." and every VQA prompt put a newline before the question; the
    # sentencepiece model maps it to a space, and so must the transformers tokenizer.
    def pieces(text):
        return world_tokenizer.convert_ids_to_tokens(world_tokenizer(text, add_special_tokens=False)["input_ids"])

    assert pieces("<|image|>\nwhat color is the circle?") == pieces("<|image|> what color is the circle?")
    assert pieces("<|image|>\nwhat")[1] == "\u2581what"
    assert pieces("a red circle.\r\n\tis there a square?") == pieces("a red circle. is there a square?")


def test_dense_scenes_ask_valid_questions(tmp_path):
    config = WorldConfig(min_objects=9, max_objects=9)
    write_world(tmp_path, {"train": 5, "val": 2, "test": 0}, seed=0, config=config)
    anns = json.loads((tmp_path / "vqa" / "train_annotations.json").read_text())["annotations"]
    counts = [a["multiple_choice_answer"] for a in anns if a["question_type"] == "count"]
    assert counts and all(c.isdigit() for c in counts)
