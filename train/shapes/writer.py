"""Write the Shapes world to disk in the formats real data uses.

Layout under ``out`` (see docs/CONTRACTS.md): PNG images, caption pairs (JSONL),
LLaVA conversations (JSON), VQAv2 questions / annotations (JSON), text-to-image
prompts with their specs (JSONL), the text tokenizer, and ``world.json``.
Every scene is drawn from its own RNG keyed by (seed, split, index), so a
split's content does not depend on the sizes of the other splits.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unified_ar.config import to_dict
from unified_ar.train.shapes.text_tokenizer import train_text_tokenizer
from unified_ar.train.shapes.world import (
    SPLITS, Scene, WorldConfig, caption, questions, render, sample_scene,
)

SPLIT_ID_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000}
QUESTIONS_PER_ID = 100  # question_id = image_id * 100 + k


@dataclass
class Record:
    """Everything the world knows about one image."""

    image_id: int
    image: str  # path relative to the world directory
    scene: Scene
    caption: str
    questions: list


def make_record(seed: int, split: str, index: int, config: WorldConfig) -> tuple[Record, np.ndarray]:
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = sample_scene(rng, config, split)
    image_id = SPLIT_ID_BASE[split] + index
    rel = f"images/{split}/{split}_{image_id:08d}.png"
    record = Record(image_id, rel, scene, caption(scene, rng, config), questions(scene, rng, config))
    return record, render(scene, config)


def _dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _dump_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def llava_conversation(record: Record) -> dict:
    """LLaVA format: the image token opens the first human turn."""
    turns = []
    for k, q in enumerate(record.questions):
        turns.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q.question})
        turns.append({"from": "gpt", "value": q.answer})
    return {"id": str(record.image_id), "image": record.image, "conversations": turns}


def vqa_files(records: list[Record], split: str) -> tuple[dict, dict]:
    """Official VQAv2 question and annotation files for ``records``."""
    head = {"info": {"description": "Shapes world VQA", "version": "1.0"}, "license": {"name": "CC0"},
            "data_subtype": split, "data_type": "shapes"}
    qs, anns = [], []
    for r in records:
        for k, q in enumerate(r.questions):
            qid = r.image_id * QUESTIONS_PER_ID + k
            qs.append({"image_id": r.image_id, "question": q.question, "question_id": qid})
            answers = [{"answer": q.answer, "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]
            anns.append({"question_id": qid, "image_id": r.image_id, "answer_type": q.answer_type,
                         "question_type": q.qtype, "multiple_choice_answer": q.answer, "answers": answers})
    return ({**head, "task_type": "Open-Ended", "questions": qs}, {**head, "annotations": anns})


def write_split(out: Path, split: str, count: int, seed: int, config: WorldConfig) -> list[Record]:
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        record, pixels = make_record(seed, split, i, config)
        Image.fromarray(pixels).save(out / record.image, format="PNG", optimize=False)
        records.append(record)
    _dump_jsonl(out / f"captions_{split}.jsonl", [
        {"image": r.image, "caption": r.caption, "image_id": r.image_id, "spec": r.scene.to_dict()} for r in records])
    _dump_json(out / f"conversations_{split}.json", [llava_conversation(r) for r in records])
    questions_json, annotations_json = vqa_files(records, split)
    (out / "vqa").mkdir(exist_ok=True)
    _dump_json(out / "vqa" / f"{split}_questions.json", questions_json)
    _dump_json(out / "vqa" / f"{split}_annotations.json", annotations_json)
    _dump_jsonl(out / f"t2i_prompts_{split}.jsonl", [
        {"index": i, "prompt": r.caption, "spec": r.scene.to_dict(), "image_id": r.image_id}
        for i, r in enumerate(records)])
    return records


def statistics(records_by_split: dict[str, list[Record]], holdout: list[str]) -> dict:
    stats = {}
    for split, records in records_by_split.items():
        objects = [o for r in records for o in r.scene.objects]
        qtypes = Counter(q.qtype for r in records for q in r.questions)
        stats[split] = {
            "images": len(records),
            "objects": len(objects),
            "objects_per_image": Counter(len(r.scene.objects) for r in records),
            "questions": sum(qtypes.values()),
            "question_types": dict(sorted(qtypes.items())),
            "yes_fraction": _yes_fraction(records),
            "colors": dict(sorted(Counter(o.color for o in objects).items())),
            "shapes": dict(sorted(Counter(o.shape for o in objects).items())),
            "holdout_pairs_seen": sorted({o.pair for o in objects} & set(holdout)),
        }
    return json.loads(json.dumps(stats))


def _yes_fraction(records: list[Record]) -> float:
    yn = [q.answer for r in records for q in r.questions if q.qtype == "existence"]
    return round(sum(a == "yes" for a in yn) / max(len(yn), 1), 4)


def write_world(out: str | Path, counts: dict[str, int], seed: int, config: WorldConfig,
                tokenizer_vocab_size: int = 192) -> dict:
    """Generate every split, the text tokenizer and ``world.json``; return the statistics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = {split: write_split(out, split, counts[split], seed, config) for split in SPLITS if counts.get(split)}
    for split, recs in records.items():
        pairs = {o.pair for r in recs for o in r.scene.objects}
        if split != "test" and pairs & set(config.holdout):
            raise AssertionError(f"hold-out pairs leaked into {split}: {sorted(pairs & set(config.holdout))}")
    texts = [r.caption for r in records["train"]] + [
        t for r in records["train"] for q in r.questions for t in (q.question, q.answer)]
    train_text_tokenizer(texts, out / "tokenizer", vocab_size=tokenizer_vocab_size)
    stats = statistics(records, config.holdout)
    _dump_json(out / "world.json", {"config": to_dict(config), "seed": seed, "counts": counts, "statistics": stats})
    return stats
