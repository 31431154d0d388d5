"""A "real-shape" fixture: every artefact a real run reads, in its official layout, at toy width.

The Shapes world fixtures are written in our own formats, so they cannot catch what only the
real artefacts carry: a tokenizer without BOS and a Qwen chat template, an embedding matrix with
more rows than the tokenizer has tokens, LlamaGen's ``{"model": ...}`` checkpoint, TokLIP's
``module.``-prefixed state dict with 0-dim logit scalars, grayscale / RGBA / CMYK / EXIF-rotated /
truncated COCO images, LLaVA-665k's text-only records (no ``image`` key, ``"model": ""``) and
integer ids next to string ones, the VQAv2 / POPE / MME releases' file layouts.
:func:`build_real_shape` writes all of them under one root, named as
``configs/model/real_qwen2.5-1.5b.yaml`` expects them under ``/models`` (``Qwen2.5-1.5B-Instruct/``,
``LlamaGen/vq_ds16_t2i.pt``, ``TokLIP/TokLIP_S_256.pt``), with the project's own model classes at
reduced width, in a few seconds on 2 CPU cores (under a second once transformers is imported),
deterministically for a seed.

Every image is a procedural "scene" (1-3 coloured shapes side by side on a gradient, plus noise,
so JPEG compression is realistic); the captions, conversations and benchmark answers are read off
the scenes, so text and pixels agree.
"""
from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 64  # pixels the model sees: a 4x4 code grid at 16x downsampling, cheap on a CPU

# LlamaGen's VQ-16 (5 levels, 2 res blocks, GroupNorm(32), 8-dim l2-normalised codes) at a width
# a CPU builds in a blink; ch must stay a multiple of the 32 GroupNorm groups
VQ_OVERRIDES: dict = dict(ch=32, z_channels=32, codebook_size=256, codebook_embed_dim=8)
# TokLIP-S-256's towers shrunk; mlp_ratio stays the so400m's odd 3.7362 (int() rounding of hidden sizes)
TOKLIP_WIDTH: dict = dict(embed_dim=32, num_heads=2, depth=2, img_size=IMAGE_SIZE,
                          width=32, heads=2, layers=2, context_length=64)
# Qwen2.5-1.5B's shape (GQA, tied embeddings, rope 1e6) at the width of a unit test
LLM_WIDTH: dict = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2)
SPARE_ROWS = 64  # embedding rows beyond the rounded tokenizer length (Qwen2.5: 151936 rows, 151665 tokens)
BPE_VOCAB = 1024  # a target: a small corpus runs out of merges first

# Qwen2.5's added tokens, in its order: the first 14 special, the rest plain added tokens
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_ADDED = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
              "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation, newlines, spaces)
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_SYSTEM = "You are a helpful assistant."
# ChatML as Qwen2-Instruct renders it: a system turn always (the default when none is given),
# "<|im_start|>role\ncontent<|im_end|>\n" per message, "<|im_start|>assistant\n" to generate
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
           "purple": (140, 60, 170), "orange": (240, 140, 30)}
GREYS = {"white": (245, 245, 245), "black": (20, 20, 20)}
ABSENT_OBJECTS = ("dog", "car", "person", "umbrella")  # COCO nouns no scene draws
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
SHORT_ANSWER = "Answer the question using a single word or phrase."
YES_NO = "Please answer yes or no."
COCO_MAX_ID = 581929  # the largest COCO 2017 image id


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class ImageSpec:
    """One fixture image: stored size (w, h), PIL mode, EXIF orientation (1 = none), truncated."""

    size: tuple[int, int]
    mode: str = "RGB"
    orientation: int = 1
    truncated: bool = False

    @property
    def suffix(self) -> str:
        return ".png" if self.mode == "RGBA" else ".jpg"  # JPEG has no alpha: COCO-like name, PNG bytes


# Non-square and varied, as COCO is; the last one is cut in half on disk
IMAGE_SPECS: tuple[ImageSpec, ...] = (
    ImageSpec((96, 64)), ImageSpec((64, 96)), ImageSpec((120, 80)), ImageSpec((80, 60)),
    ImageSpec((100, 100)), ImageSpec((160, 90)), ImageSpec((90, 160)), ImageSpec((72, 48)),
    ImageSpec((128, 96), mode="L"), ImageSpec((96, 72), mode="RGBA"), ImageSpec((80, 64), mode="CMYK"),
    ImageSpec((112, 64), orientation=6),  # stored landscape, shown portrait (rotate 90 degrees clockwise)
    ImageSpec((96, 96), truncated=True),
)


@dataclass(frozen=True)
class Scene:
    """What an image shows: ``objects`` (colour, shape) from left to right, a dark or light background."""

    objects: tuple[tuple[str, str], ...]
    tone: str

    def describe(self) -> str:
        names = [f"{article(c)} {c} {s}" for c, s in self.objects]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def shapes(self) -> list[str]:
        return [s for _, s in self.objects]

    def absent(self) -> list[str]:
        return [s for s in SHAPES if s not in self.shapes()]


@dataclass
class RealShape:
    """Paths of everything :func:`build_real_shape` wrote, and what was written."""

    root: Path
    llm_dir: Path
    vq_pt: Path
    toklip_pt: Path
    vq_overrides: dict
    toklip_overrides: dict
    image_root: Path
    images: list[str]
    bad_image: str
    llava_json: Path
    captions_parquet: Path
    vqav2_dir: Path
    pope_dir: Path
    mme_dir: Path
    # relative path -> its spec (mode, stored size, EXIF orientation), the bad image included
    image_specs: dict[str, ImageSpec] = field(default_factory=dict)
    bad_record_index: int = -1  # the one LLaVA record whose image is the truncated file
    text_vocab_size: int = 0  # len(tokenizer); the LLM's embedding has more rows


def build_real_shape(root: Path, seed: int = 0) -> RealShape:
    """Write the whole fixture under ``root`` (created); same ``seed``, same files."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    image_root = root / "data"
    rels, scenes, specs = _write_images(image_root, rng)
    good = [r for r in rels if not specs[r].truncated]
    bad = next(r for r in rels if specs[r].truncated)
    llava_json, bad_index = _write_llava(image_root / "llava" / "llava_v1_5_mix665k.json", good, bad, scenes, rng)
    captions = _write_captions(image_root / "t2i" / "captions.parquet", good, scenes, rng)
    jpegs = [r for r in good if r.endswith(".jpg")]
    bench = root / "eval"
    # COCO val2014 has grayscale pictures too; POPE gets the grayscale, CMYK and EXIF-rotated ones
    vqav2 = _write_vqav2(bench / "vqav2", image_root, jpegs[3:9], scenes, rng)
    pope = _write_pope(bench / "pope", image_root, jpegs[8:11], scenes, rng)
    mme = _write_mme(bench / "MME_Benchmark_release_version", image_root, jpegs[:7], scenes)
    llm_dir = root / "Qwen2.5-1.5B-Instruct"
    n_text = _write_tokenizer(llm_dir, _corpus(llava_json, captions, bench))
    _write_llm(llm_dir, n_text, seed)
    vq_overrides = dict(VQ_OVERRIDES)
    toklip_overrides = {**TOKLIP_WIDTH, "vocab_size": n_text, "vq_cfg": dict(vq_overrides)}
    vq = _write_vq(root / "LlamaGen" / "vq_ds16_t2i.pt", vq_overrides, seed)
    _write_toklip(root / "TokLIP" / "TokLIP_S_256.pt", vq, toklip_overrides, seed)
    return RealShape(root=root, llm_dir=llm_dir, vq_pt=root / "LlamaGen" / "vq_ds16_t2i.pt",
                     toklip_pt=root / "TokLIP" / "TokLIP_S_256.pt", vq_overrides=vq_overrides,
                     toklip_overrides=toklip_overrides, image_root=image_root, images=good, bad_image=bad,
                     llava_json=llava_json, captions_parquet=captions, vqav2_dir=vqav2, pope_dir=pope,
                     mme_dir=mme, image_specs=specs, bad_record_index=bad_index, text_vocab_size=n_text)


# ----------------------------------------------------------------------------- images
def _scene(rng: np.random.Generator, n: int, grey: bool) -> Scene:
    palette = list(GREYS if grey else COLOURS)
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
    order = rng.permutation(len(palette))
    colours = [palette[order[k % len(palette)]] for k in range(n)]  # two greys for three shapes: one repeats
    return Scene(tuple(zip(colours, shapes)), "dark" if rng.random() < 0.5 else "light")


def _draw(scene: Scene, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """The scene as an RGB picture: a vertical gradient, the shapes in equal slots left to right, noise."""
    w, h = size
    lo, hi = ((10, 100), (150, 240))[scene.tone == "light"]
    top, bottom = rng.integers(lo, hi, (2, 3))
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    image = Image.fromarray(np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    slot = w / len(scene.objects)
    for k, (colour, shape) in enumerate(scene.objects):
        side = int(min(slot, h) * rng.uniform(0.5, 0.8))
        x0 = int(k * slot + rng.integers(0, max(1, int(slot) - side)))
        y0 = int(rng.integers(0, max(1, h - side)))
        box = (x0, y0, x0 + side, y0 + side)
        fill = {**COLOURS, **GREYS}[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x0 + side // 2, y0), (x0 + side, y0 + side), (x0, y0 + side)], fill=fill)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 6.0, (h, w, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def _encode(image: Image.Image, spec: ImageSpec) -> bytes:
    """The file bytes for ``spec``: its mode, its format, EXIF orientation, truncation."""
    buffer = io.BytesIO()
    if spec.mode == "RGBA":  # fully transparent outside a centred ellipse, partly inside
        alpha = Image.new("L", image.size, 0)
        w, h = image.size
        ImageDraw.Draw(alpha).ellipse((w // 8, h // 8, w - w // 8, h - h // 8), fill=200)
        rgba = image.convert("RGBA")
        rgba.putalpha(alpha)
        rgba.save(buffer, format="PNG")
    elif spec.orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = spec.orientation  # the Orientation tag phone cameras write
        image.save(buffer, format="JPEG", quality=90, exif=exif)
    else:
        image.convert(spec.mode).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[:len(data) // 2] if spec.truncated else data


def _write_images(image_root: Path, rng: np.random.Generator) -> tuple[list[str], dict, dict]:
    """COCO train2017 files (12-digit ids) for :data:`IMAGE_SPECS`: their relative paths, and the
    Scene and ImageSpec of each. The first scenes hold 3 and 2 shapes, so that position questions
    always have an image to ask about."""
    folder = image_root / "coco" / "train2017"
    folder.mkdir(parents=True, exist_ok=True)
    ids = rng.choice(np.arange(1, COCO_MAX_ID + 1), size=len(IMAGE_SPECS), replace=False)
    rels, scenes, specs = [], {}, {}
    for k, (spec, coco_id) in enumerate(zip(IMAGE_SPECS, ids)):
        n = (3, 2)[k] if k < 2 else int(rng.integers(1, 4))
        scene = _scene(rng, n, grey=spec.mode == "L")
        rel = f"coco/train2017/{int(coco_id):012d}{spec.suffix}"
        (image_root / rel).write_bytes(_encode(_draw(scene, spec.size, rng), spec))
        rels.append(rel)
        scenes[rel], specs[rel] = scene, spec
    return rels, scenes, specs


# ----------------------------------------------------------------------------- text about a scene
def _captions_of(scene: Scene, rng: np.random.Generator) -> list[str]:
    """2-4 captions of ``scene``, in the styles of COCO / LAION captions."""
    n = len(scene.objects)
    noun = "shape" if n == 1 else "shapes"
    pool = [f"{scene.describe().capitalize()} on a {scene.tone} background.",
            f"A picture with {NUMBER_WORDS[n]} {noun}: {scene.describe()}.",
            f"{scene.describe().capitalize()}, from left to right.",
            f"a {scene.tone} gradient behind {scene.describe()}"]
    keep = rng.permutation(len(pool))[:int(rng.integers(2, 5))]
    return [pool[i] for i in sorted(keep)]


def _qa_of(scene: Scene) -> list[tuple[str, str, str, str]]:
    """(question, answer, VQAv2 question_type, VQAv2 answer_type) that ``scene`` answers."""
    colour, shape = scene.objects[0]
    n = len(scene.objects)
    qa = [(f"What color is the {shape}?", colour, "what color is the", "other"),
          ("How many shapes are there?", str(n), "how many", "number"),
          (f"Is there a {shape} in the image?", "yes", "is there a", "yes/no")]
    if scene.absent():
        qa.append((f"Is there a {scene.absent()[0]} in the image?", "no", "is there a", "yes/no"))
    if n > 1:
        qa.append(("What shape is on the left?", scene.objects[0][1], "what", "other"))
    qa.append(("Is the background dark?", "yes" if scene.tone == "dark" else "no", "is the", "yes/no"))
    return qa


# ----------------------------------------------------------------------------- LLaVA-665k
TEXT_ONLY = [  # ShareGPT-style turns of the 665k mixture's text-only part (no "image" key)
    [("What is a triangle?", "A shape with three sides."),
     ("And a square?", "A shape with four equal sides.")],
    [("Name three colors.", "Red, green and blue.")],
    [("Write a short greeting.", "Hello! How can I help you today?")],
    [("How many sides does a circle have?", "A circle has no straight sides."),
     ("Is a circle a polygon?", "No, it is not.")],
    [("Translate 'yes' to French.", "Oui.")],
    [("What is two plus three?", "Five.")],
]


def _image_record(rel: str, scene: Scene, rng: np.random.Generator, style: int) -> dict:
    """A multi-turn LLaVA record about one image; ``style`` varies where ``<image>`` goes and whether
    the short-answer prompt of the VQAv2 / GQA part of the mixture is appended."""
    qa = _qa_of(scene)
    picks = [qa[i] for i in rng.permutation(len(qa))[:int(rng.integers(2, 4))]]
    turns = []
    for k, (question, answer, _, _) in enumerate(picks):
        if style == 2:  # the VQAv2 part: a single word or phrase
            question = f"{question}\n{SHORT_ANSWER}"
        else:
            answer = f"{answer.capitalize()}."
        if k == 0:
            question = f"{question}\n<image>" if style == 1 else f"<image>\n{question}"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": Path(rel).stem, "image": rel, "conversations": turns}


def _llava_records(good: list[str], bad: str, scenes: dict[str, Scene], rng: np.random.Generator) -> list[dict]:
    records = []
    for k, rel in enumerate(good):
        records.append(_image_record(rel, scenes[rel], rng, style=k % 3))
        describe = {"id": Path(rel).stem, "image": rel, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": _captions_of(scenes[rel], rng)[0]}]}
        records.append(describe)
    for k in (1, 4):  # integer ids, as some LLaVA mixture files carry next to string ones
        records[k]["id"] = int(records[k]["id"])
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    for turns in TEXT_ONLY:
        sharegpt_id = "".join(letters[i] for i in rng.integers(0, len(letters), 7)) + "_0"
        conv = [{"from": f, "value": v} for q, a in turns for f, v in (("human", q), ("gpt", a))]
        records.append({"id": sharegpt_id, "model": "", "conversations": conv})  # 665k keeps "model": ""
    records.append({"id": Path(bad).stem, "image": bad, "conversations": [
        {"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": "Shapes."}]})
    return records


def _write_llava(path: Path, good: list[str], bad: str, scenes: dict[str, Scene],
                 rng: np.random.Generator) -> tuple[Path, int]:
    """The JSON list, shuffled as the 665k file is; returns it and the bad record's index."""
    records = _llava_records(good, bad, scenes, rng)
    order = rng.permutation(len(records))
    records = [records[i] for i in order]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2))
    return path, next(i for i, r in enumerate(records) if r.get("image") == bad)


def _write_captions(path: Path, good: list[str], scenes: dict[str, Scene], rng: np.random.Generator) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(rel, caption) for rel in good for caption in _captions_of(scenes[rel], rng)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": [r for r, _ in rows], "caption": [c for _, c in rows]}), path)
    return path


# ----------------------------------------------------------------------------- benchmarks
def _copy_image(image_root: Path, rel: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image_root / rel, dest)  # real bytes under the benchmark's name, no symlink


def _coco_id(rel: str) -> int:
    return int(Path(rel).stem)


def _vqa_answers(answer: str, atype: str, rng: np.random.Generator) -> list[dict]:
    """10 annotators' answers: mostly ``answer``, a few dissenting or spelled differently."""
    if atype == "yes/no":
        other = "no" if answer == "yes" else "yes"
    elif atype == "number":
        other = NUMBER_WORDS.get(int(answer), answer)  # "two": the answer processor maps it to "2"
    else:
        other = next(c for c in COLOURS if c != answer)
    dissent = int(rng.integers(0, 4))
    answers = [answer] * (10 - dissent) + [other] * dissent
    confidence = ["yes", "yes", "maybe"]
    return [{"answer": a, "answer_confidence": confidence[k % 3], "answer_id": k + 1} for k, a in enumerate(answers)]


def _write_vqav2(out: Path, image_root: Path, rels: list[str], scenes: dict[str, Scene],
                 rng: np.random.Generator) -> Path:
    """``v2_OpenEnded_mscoco_val2014_questions.json`` + ``v2_mscoco_val2014_annotations.json`` (3
    questions per image, ids ``image_id * 1000 + k`` as VQAv2's) and ``val2014/COCO_val2014_*.jpg``."""
    head = {"info": {"description": "real-shape fixture in the VQA v2.0 format", "version": "2.0"},
            "license": {"name": "CC BY 4.0", "url": "http://creativecommons.org/licenses/by/4.0/"},
            "data_subtype": "val2014", "data_type": "mscoco"}
    questions, annotations = [], []
    for rel in rels:
        image_id = _coco_id(rel)
        _copy_image(image_root, rel, out / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
        for k, (q, a, qtype, atype) in enumerate(_qa_of(scenes[rel])[:3]):
            qid = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": q, "question_id": qid})
            annotations.append({"question_type": qtype, "multiple_choice_answer": a,
                                "answers": _vqa_answers(a, atype, rng), "image_id": image_id,
                                "answer_type": atype, "question_id": qid})
    out.mkdir(parents=True, exist_ok=True)
    (out / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps({**head, "task_type": "Open-Ended", "questions": questions}))
    (out / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({**head, "annotations": annotations}))
    return out


def _write_pope(out: Path, image_root: Path, rels: list[str], scenes: dict[str, Scene],
                rng: np.random.Generator) -> Path:
    """``coco/coco_pope_{random,popular,adversarial}.json`` (JSON lines, ids from 1 in each file, as
    POPE's release; LLaVA keeps them under ``eval/pope/coco``) and ``val2014/`` images. Negatives:
    a COCO noun never drawn (random) or an undrawn shape (popular, adversarial)."""
    for rel in rels:
        _copy_image(image_root, rel, out / "val2014" / f"COCO_val2014_{_coco_id(rel):012d}.jpg")
    (out / "coco").mkdir(parents=True, exist_ok=True)
    for category in ("random", "popular", "adversarial"):
        lines = []
        for rel in rels:
            scene, name = scenes[rel], f"COCO_val2014_{_coco_id(rel):012d}.jpg"
            absent = scene.absent() if category != "random" and scene.absent() else list(ABSENT_OBJECTS)
            negative = absent[int(rng.integers(0, len(absent)))]
            for obj, label in ((scene.shapes()[0], "yes"), (negative, "no")):
                lines.append({"question_id": len(lines) + 1, "image": name,
                              "text": f"Is there {article(obj)} {obj} in the image?", "label": label})
        (out / "coco" / f"coco_pope_{category}.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return out


def _mme_pair(category: str, scene: Scene) -> tuple[str, str]:
    """MME's pair for one image: a question answered Yes, then one answered No."""
    colour, shape = scene.objects[0]
    n = len(scene.objects)
    if category == "existence":
        absent = (scene.absent() or list(ABSENT_OBJECTS))[0]
        pos, neg = f"Is there a {shape} in this image?", f"Is there {article(absent)} {absent} in this image?"
    elif category == "count":
        pos, neg = (f"Are there {NUMBER_WORDS[n]} shapes in this image?",
                    f"Are there {NUMBER_WORDS[n + 1]} shapes in this image?")
    elif category == "color":
        other = next(c for c in (*COLOURS, *GREYS) if c != colour)
        pos = f"Is there {article(colour)} {colour} {shape} in this image?"
        neg = f"Is there {article(other)} {other} {shape} in this image?"
    elif category == "position":
        right = scene.objects[1][1]
        pos, neg = (f"Is the {shape} on the left of the {right}?", f"Is the {shape} on the right of the {right}?")
    else:  # scene
        other = "light" if scene.tone == "dark" else "dark"
        pos, neg = f"Is the background of this image {scene.tone}?", f"Is the background of this image {other}?"
    return f"{pos} {YES_NO}\tYes", f"{neg} {YES_NO}\tNo"


def _code_image() -> Image.Image:
    """A code_reasoning-style screenshot: three lines of Python, black on white."""
    image = Image.new("RGB", (120, 56), "white")
    ImageDraw.Draw(image).multiline_text((4, 4), "a = 2\nb = 3\nprint(a + b)", fill="black")
    return image


def _write_mme(out: Path, image_root: Path, rels: list[str], scenes: dict[str, Scene]) -> Path:
    """``MME_Benchmark_release_version``: COCO categories with ``<id>.jpg`` + ``<id>.txt`` side by side,
    ``scene`` with ``images/`` + ``questions_answers_YN/``, ``code_reasoning`` with a ``.png``."""
    # rels[0] has 3 shapes and rels[1] 2 (see _write_images): position needs two
    plan = [("position", rels[0]), ("count", rels[1]), ("existence", rels[2]), ("existence", rels[3]),
            ("color", rels[4]), ("color", rels[5]), ("scene", rels[6])]
    for category, rel in plan:
        name = f"{_coco_id(rel):012d}"
        nested = category == "scene"  # the Places-derived categories keep images and texts apart
        image = out / category / ("images" if nested else "") / f"{name}.jpg"
        text = out / category / ("questions_answers_YN" if nested else "") / f"{name}.txt"
        _copy_image(image_root, rel, image)
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("\n".join(_mme_pair(category, scenes[rel])) + "\n")
    code = out / "code_reasoning"
    code.mkdir(parents=True, exist_ok=True)
    _code_image().save(code / "0001.png")
    prompt = f"The image shows a python code. Is the output of the code '{{}}'? {YES_NO}"
    (code / "0001.txt").write_text(f"{prompt.format(5)}\tYes\n{prompt.format(6)}\tNo\n")
    return out


# ----------------------------------------------------------------------------- tokenizer and LLM
def _corpus(llava_json: Path, captions: Path, bench: Path) -> list[str]:
    """Every text of the fixture (conversations, captions, benchmark questions and answers), in a
    fixed order: the tokenizer learns the words it will meet, as a real one has."""
    import pyarrow.parquet as pq

    texts = [DEFAULT_SYSTEM, "system user assistant"]
    for record in json.loads(llava_json.read_text()):
        texts += [turn["value"].replace("<image>", "") for turn in record["conversations"]]
    texts += pq.read_table(captions).column("caption").to_pylist()
    vqa = json.loads((bench / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    texts += [q["question"] for q in vqa["questions"]]
    for path in sorted((bench / "pope" / "coco").glob("*.json")):
        texts += [json.loads(line)["text"] for line in path.read_text().splitlines()]
    for path in sorted(bench.rglob("*.txt")):  # MME: question<TAB>answer lines
        texts += [part for line in path.read_text().splitlines() for part in line.split("\t")]
    return texts


def _train_bpe(texts: list[str]):
    """A byte-level BPE with Qwen2's normaliser, split regex, decoder, then Qwen's added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer)
    # after the BPE vocabulary, as in Qwen (ids 151643...): <|endoftext|> first
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED])
    return tok


def _tokenizer_config(tok) -> dict:
    """``tokenizer_config.json`` as Qwen2.5-Instruct ships it: no BOS, eos ``<|im_end|>``, pad
    ``<|endoftext|>``, the specials listed as additional special tokens, the chat template inline."""
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": t in QWEN_SPECIALS}
             for t in QWEN_SPECIALS + QWEN_ADDED}
    return {"add_prefix_space": False, "added_tokens_decoder": added,
            "additional_special_tokens": QWEN_SPECIALS[1:], "bos_token": None, "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
            "model_max_length": 131072, "pad_token": "<|endoftext|>", "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}


def _write_tokenizer(llm_dir: Path, texts: list[str]) -> int:
    """``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``; returns the length."""
    tok = _train_bpe(texts)
    llm_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(llm_dir / "tokenizer.json"))
    tok.model.save(str(llm_dir))  # vocab.json + merges.txt, which Qwen's repository also carries
    (llm_dir / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(tok), indent=2) + "\n")
    return tok.get_vocab_size(with_added_tokens=True)


def _hub_config(vocab_size: int, ids: dict[str, int]) -> dict:
    """``config.json`` as Qwen2.5-1.5B-Instruct's repository has it, written by transformers 4.x
    (top-level ``rope_theta``, ``torch_dtype``, a ``sliding_window`` that ``use_sliding_window``
    switches off), so loading it exercises transformers 5's reading of a 4.x config. As there,
    ``bos_token_id`` is ``<|endoftext|>`` although the tokenizer has no BOS."""
    return {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "hidden_act": "silu",
            **LLM_WIDTH, "initializer_range": 0.02, "max_position_embeddings": 32768,
            "max_window_layers": 1,  # 21 of 28 there: were sliding on, the later layers would slide
            "model_type": "qwen2", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.43.1",
            "use_cache": True, "use_sliding_window": False, "vocab_size": vocab_size}


def _hub_generation_config(ids: dict[str, int]) -> dict:
    """Qwen2.5-Instruct's ``generation_config.json``: sampling on, stop at either end token."""
    end, eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    return {"bos_token_id": end, "pad_token_id": end, "do_sample": True, "eos_token_id": [eos, end],
            "repetition_penalty": 1.1, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "transformers_version": "4.37.0"}


def _write_llm(llm_dir: Path, n_text: int, seed: int) -> None:
    """A random Qwen2ForCausalLM, bf16 safetensors as the release, whose embedding has ``n_text``
    rounded up to 64, plus :data:`SPARE_ROWS`, rows; then the repository's own JSON files."""
    from transformers import AutoConfig, Qwen2ForCausalLM

    added = json.loads((llm_dir / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in added}
    hub = _hub_config((n_text + 63) // 64 * 64 + SPARE_ROWS, ids)
    config = AutoConfig.for_model(**{k: v for k, v in hub.items() if k not in ("transformers_version",)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(llm_dir)  # the weights; the JSON files it writes are 5.x's, replaced below
    (llm_dir / "config.json").write_text(json.dumps(hub, indent=2) + "\n")
    (llm_dir / "generation_config.json").write_text(json.dumps(_hub_generation_config(ids), indent=2) + "\n")


# ----------------------------------------------------------------------------- VQ and TokLIP
def _write_vq(path: Path, overrides: dict, seed: int):
    """LlamaGen's checkpoint layout: the weights under "model" of a torch.save'd dict."""
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel, preset_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vq = VQModel(preset_config(VQ_PRESETS, "VQ-16", **overrides)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: v.detach().clone() for k, v in vq.state_dict().items()}}, path)
    return vq


def _write_toklip(path: Path, vq, overrides: dict, seed: int) -> None:
    """TencentARC's layout: open_clip's ``{"state_dict": {"module." + name: tensor}}`` with 0-dim
    ``logit_scale`` / ``logit_bias``; the trunk's VQ is the LlamaGen VQ above, weight for weight."""
    from unified_ar.tokenizer.toklip import TokLIP, toklip_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TokLIP(toklip_config("TokLIP-S-256", **overrides), vq=vq)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().clone()
        state["module." + name] = tensor.reshape(()) if name in ("logit_scale", "logit_bias") else tensor
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "name": "TokLIP_S_256", "state_dict": state}, path)
