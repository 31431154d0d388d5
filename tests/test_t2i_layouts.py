"""eval-t2i's GenEval and DPG-Bench folders: the layouts their official scorers read.

GenEval: djghosh13/geneval @ af4902f24d3ca90ebbb446dd9891a59e0f82725f. ``evaluation/evaluate_images.py``
``main()`` walks ``IMAGEDIR``: every entry that is a folder with an all-digit name, its
``metadata.jsonl`` read with ``json.load``, then every file of ``samples/`` that ``re.match(r"\\d+\\.png")``
accepts. ``generation/diffusers_generate.py`` writes ``{index:0>5}/metadata.jsonl`` (``json.dump`` of
the line), ``samples/{k:05}.png`` and ``grid.png``. That ``main()`` (extracted verbatim, the detector
stubbed) was run in a scratch folder on our folder for all 553 lines of
``prompts/evaluation_metadata.jsonl``: it walked 2212 images, 4 per prompt, metadata equal to each line.

DPG-Bench: TencentQQGYLab/ELLA @ 3c228f1dc6c4d3cad0a47493816151a419f14db3 ``dpg_bench/compute_dpg_bench.py``:
``main()`` scores every file of ``--image-root-path``, keyed by ``basename.split('.')[0]``;
``compute_dpg_one_sample`` crops ``(0,0,R,R), (R,0,2R,R), (0,R,R,2R), (R,R,2R,2R)`` (``--pic-num 4``
in ``dist_eval.sh``) with ``R = --resolution``. Both functions (extracted verbatim, accelerate, mPLUG
and the CSV stubbed; the stub VQA says "yes" iff a crop equals the sample we drew for it) were run
on our folder for all 1065 prompts: score 100.0, and 0.0 with ``--resolution`` one pixel off.

The tests below check the same walks with our own code of those rules.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unified_ar.eval import t2i
from unified_ar.eval.t2i import (main as t2i_main, read_dpg_prompts, read_geneval_metadata, sample_index,
                                 write_dpg, write_geneval)

FIXTURES = Path(__file__).parent / "fixtures" / "t2i"
GENEVAL = FIXTURES / "geneval_metadata.jsonl"  # our own lines in the schema of evaluation_metadata.jsonl, one per tag
DPG = FIXTURES / "dpg_prompts"
SIZE = 6


class FakeImageFn:
    """Deterministic images: index ``v`` gives the same noise every time; records every call."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[list[int]] = []
        self.fail_after = fail_after

    def __call__(self, prompts, indices):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt("killed")
        assert len(prompts) == len(indices)
        self.calls.append(list(indices))
        return [expected(v) for v in indices]


def expected(v: int) -> np.ndarray:
    return np.random.default_rng(v).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def geneval_walk(imagedir: Path) -> list[tuple[str, str, dict]]:
    """(folder, sample file, metadata) for each image evaluate_images.py main() would score."""
    found = []
    for sub in os.listdir(imagedir):
        folder = imagedir / sub
        if not folder.is_dir() or not sub.isdigit():
            continue
        with open(folder / "metadata.jsonl") as fp:
            metadata = json.load(fp)
        for name in os.listdir(folder / "samples"):
            if (folder / "samples" / name).is_file() and re.match(r"\d+\.png", name):
                found.append((sub, name, metadata))
    return sorted(found, key=lambda r: (r[0], r[1]))


def dpg_crops(path: Path, resolution: int) -> list[np.ndarray]:
    """The four tiles compute_dpg_one_sample crops from one grid."""
    r = resolution
    with Image.open(path) as img:
        return [np.asarray(img.crop(box).convert("RGB"))
                for box in [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)]]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- GenEval -----------------------------------------------------------------------------------
def test_geneval_layout_is_what_evaluate_images_walks(tmp_path):
    lines = GENEVAL.read_text().splitlines()
    prompts = read_geneval_metadata(GENEVAL)
    assert [p.prompt for p in prompts] == [json.loads(line)["prompt"] for line in lines]
    fn = FakeImageFn()
    assert write_geneval(fn, prompts, tmp_path, n_samples=4, batch_size=3) == 6 * 4
    walked = geneval_walk(tmp_path)
    assert [(sub, name) for sub, name, _ in walked] == [
        (f"{i:05d}", f"{k:05d}.png") for i in range(6) for k in range(4)]
    for sub, name, metadata in walked:
        i, k = int(sub), int(name[:-4])
        assert metadata == json.loads(lines[i])
        assert (tmp_path / sub / "metadata.jsonl").read_bytes() == lines[i].encode()
        assert np.array_equal(np.asarray(Image.open(tmp_path / sub / "samples" / name)), expected(i * 1000 + k))
    for i in range(6):
        assert sorted(os.listdir(tmp_path / f"{i:05d}")) == ["grid.png", "metadata.jsonl", "samples"]
    # seeds: sample k of prompt i is index i * 1000 + k (image_fn adds --seed), whatever the batching
    assert sorted(v for call in fn.calls for v in call) == sorted(sample_index(i, k) for i in range(6) for k in range(4))


def test_geneval_metadata_kept_byte_for_byte(tmp_path):
    meta = tmp_path / "m.jsonl"
    line = '{"prompt":"un caf\u00e9 \\u2014 a photo","tag":"single_object","include":[]}'
    meta.write_text(line + "\n\n", encoding="utf-8")  # blank lines are skipped
    write_geneval(FakeImageFn(), read_geneval_metadata(meta), tmp_path / "out", n_samples=1)
    assert (tmp_path / "out" / "00000" / "metadata.jsonl").read_bytes() == line.encode("utf-8")
    assert geneval_walk(tmp_path / "out")[0][2] == json.loads(line)


def test_geneval_lines_end_at_newlines_only(tmp_path):
    meta = tmp_path / "m.jsonl"
    first = '{"prompt": "a\u2028b", "tag": "x"}'  # a raw U+2028 inside a JSON string is valid JSON
    meta.write_bytes((first + "\r\n" + '{"prompt": "c"}\r\n').encode("utf-8"))
    prompts = read_geneval_metadata(meta)
    assert [p.prompt for p in prompts] == ["a\u2028b", "c"] and prompts[0].metadata == first
    meta.write_bytes(b'{"prompt": "\xff"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl: not UTF-8 text"):
        read_geneval_metadata(meta)


def test_geneval_resume_draws_only_what_is_missing_and_the_same(tmp_path):
    prompts = read_geneval_metadata(GENEVAL)
    write_geneval(FakeImageFn(), prompts, tmp_path / "whole", n_samples=4, batch_size=8)
    killed = FakeImageFn(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        write_geneval(killed, prompts, tmp_path / "run", n_samples=4, batch_size=5)
    (tmp_path / "run" / "00000" / "samples" / ".00003.png.999.tmp").write_bytes(b"half")  # a torn write
    again = FakeImageFn()
    assert write_geneval(again, prompts, tmp_path / "run", n_samples=4, batch_size=3) == 24 - 10
    assert sorted(v for c in again.calls for v in c) == sorted(
        sample_index(i, k) for i in range(6) for k in range(4))[10:]
    assert tree(tmp_path / "run") == tree(tmp_path / "whole")  # grids included
    none = FakeImageFn()
    assert write_geneval(none, prompts, tmp_path / "run", n_samples=4) == 0 and none.calls == []
    # more samples later: only the new ones are drawn, the first four stay as they were
    assert write_geneval(FakeImageFn(), prompts, tmp_path / "run", n_samples=6) == 6 * 2
    assert len(geneval_walk(tmp_path / "run")) == 36
    with pytest.raises(ValueError, match=r"00004\.png: GenEval would score it, but --n-samples 4"):
        write_geneval(FakeImageFn(), prompts, tmp_path / "run", n_samples=4)


def test_geneval_folder_of_another_prompt_is_an_error(tmp_path):
    prompts = read_geneval_metadata(GENEVAL)
    write_geneval(FakeImageFn(), prompts[:2], tmp_path, n_samples=1)
    with pytest.raises(ValueError, match=r"00001.metadata\.jsonl holds another prompt than .*:2"):
        write_geneval(FakeImageFn(), [prompts[0], prompts[2].__class__(1, "00001", "x", "{}", f"{GENEVAL}:2")],
                      tmp_path, n_samples=1)


# -- DPG-Bench ---------------------------------------------------------------------------------
def test_dpg_grids_are_what_compute_dpg_bench_crops(tmp_path):
    prompts = read_dpg_prompts(DPG)
    assert [p.name for p in prompts] == ["0", "10", "COCOval2014000000010363", "whoops7"]
    assert prompts[1].prompt == "Two cats \u201cnapping\u201d on a sofa."
    assert prompts[2].prompt == "A lighthouse at dusk, waves crashing."
    assert write_dpg(FakeImageFn(), prompts, tmp_path, batch_size=3) == 16
    assert sorted(os.listdir(tmp_path)) == sorted(f"{p.name}.png" for p in prompts)  # the scorer reads every file
    for p in prompts:
        path = tmp_path / f"{p.name}.png"
        assert path.name.split(".")[0] == p.name  # the scorer's key
        assert Image.open(path).size == (2 * SIZE, 2 * SIZE)
        for k, tile in enumerate(dpg_crops(path, SIZE)):
            assert np.array_equal(tile, expected(sample_index(p.index, k)))
        assert not np.array_equal(dpg_crops(path, SIZE - 1)[1], expected(sample_index(p.index, 1))[:-1, :-1])


def test_dpg_resume_after_a_kill(tmp_path):
    prompts = read_dpg_prompts(DPG)
    write_dpg(FakeImageFn(), prompts, tmp_path / "whole", batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        write_dpg(FakeImageFn(fail_after=2), prompts, tmp_path / "run", batch_size=3)  # 6 samples: 1 grid
    assert sorted(os.listdir(tmp_path / "run")) == ["0.png"]
    again = FakeImageFn()
    assert write_dpg(again, prompts, tmp_path / "run", batch_size=5) == 12
    assert min(v for c in again.calls for v in c) == sample_index(1, 0)
    assert tree(tmp_path / "run") == tree(tmp_path / "whole")


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ('{"prompt": "a"}\n{"tag": "x"}\n', r"m\.jsonl:2: a GenEval metadata line needs a string \"prompt\""),
    ('{"prompt": "a"}\n\n{"prompt": \n', r"m\.jsonl:3: invalid JSON"),
    ('["prompt"]\n', r"m\.jsonl:1: a GenEval metadata line needs"),
    ("\n", r"m\.jsonl: no prompts"),
])
def test_bad_geneval_metadata(tmp_path, text, message):
    (tmp_path / "m.jsonl").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_geneval_metadata(tmp_path / "m.jsonl")


def test_bad_dpg_prompts(tmp_path):
    with pytest.raises(ValueError, match=r"no prompt files \(\*\.txt\)"):
        read_dpg_prompts(tmp_path)
    (tmp_path / "a.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"a\.txt: empty prompt"):
        read_dpg_prompts(tmp_path)
    (tmp_path / "a.txt").write_text("ok")
    (tmp_path / "b.v2.txt").write_text("ok")
    with pytest.raises(ValueError, match=r"b\.v2\.txt: a DPG-Bench prompt name may not contain"):
        read_dpg_prompts(tmp_path)
    with pytest.raises(FileNotFoundError, match="prompts folder not found"):
        read_dpg_prompts(tmp_path / "nope")


# -- the command -------------------------------------------------------------------------------
@pytest.fixture
def fake_model(monkeypatch):
    """load_image_fn replaced by the fake; records the settings it was asked for."""
    loads = []

    def load_image_fn(model_dir, cfg_scale, seed, device):
        loads.append((model_dir, cfg_scale, seed))
        fn = FakeImageFn()
        return lambda prompts, indices: fn(prompts, [seed + v for v in indices])

    monkeypatch.setattr("unified_ar.eval.model_adapter.load_image_fn", load_image_fn)
    return loads


def test_cli_geneval_and_dpg(tmp_path, fake_model, capsys):
    out = tmp_path / "out"
    args = ["--model", str(tmp_path / "m"), "--out", str(out), "--seed", "5"]
    assert t2i_main([*args, "--geneval-metadata", str(GENEVAL), "--n-samples", "2", "--limit", "3"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["benchmark"] == "geneval" and metrics["num_images"] == 6 and metrics["drawn"] == 6
    assert metrics["score_with"].startswith(f"python evaluation/evaluate_images.py {out / 'geneval'} ")
    assert len(geneval_walk(out / "geneval")) == 6
    assert np.array_equal(np.asarray(Image.open(out / "geneval" / "00002" / "samples" / "00001.png")),
                          expected(5 + 2001))  # --seed + 1000 i + k
    assert t2i_main([*args, "--dpg-prompts", str(DPG)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["resolution"] == SIZE and metrics["score_with"] == f"bash dpg_bench/dist_eval.sh {out / 'dpg'} {SIZE}"
    assert sorted(os.listdir(out)) == ["dpg", "dpg.sampling.json", "geneval", "geneval.sampling.json",
                                       "metrics.json", "metrics.md"]
    assert len(fake_model) == 2
    assert t2i_main([*args, "--dpg-prompts", str(DPG)]) == 0  # all there: no model is loaded
    assert json.loads(capsys.readouterr().out)["drawn"] == 0 and len(fake_model) == 2
    assert t2i_main([*args, "--dpg-prompts", str(DPG), "--cfg-scale", "2.0"]) == 2
    # the default guidance was the model folder's (none here: the one default, 3.0)
    assert "cfg_scale: 3.0 there, 2.0 now" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--geneval-metadata", "GENEVAL", "--images", "x"], "--images goes with --prompts"),
    (["--geneval-metadata", "GENEVAL", "--model", "m", "--shuffle-seed", "0"], "--shuffle-seed goes with --prompts"),
    (["--dpg-prompts", "DPG", "--model", "m", "--n-samples", "2"], "--n-samples must be 4"),
    (["--geneval-metadata", "BAD", "--model", "m"], "bad.jsonl:2: a GenEval metadata line needs"),
    (["--dpg-prompts", "EMPTY", "--model", "m"], "no prompt files"),
])
def test_cli_errors_are_one_line(tmp_path, fake_model, capsys, extra, message):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"tag": "b"}\n')
    (tmp_path / "empty").mkdir()
    names = {"GENEVAL": str(GENEVAL), "DPG": str(DPG), "BAD": str(tmp_path / "bad.jsonl"),
             "EMPTY": str(tmp_path / "empty")}
    assert t2i_main([names.get(a, a) for a in extra] + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and fake_model == []


def test_tiny_model_draws_the_layouts(tmp_path, capsys):
    from unified_helpers import tiny_model

    model = tiny_model(tmp_path / "tok")
    model.save_pretrained(tmp_path / "model")
    args = ["--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--device", "cpu", "--limit", "1"]
    assert t2i_main([*args, "--geneval-metadata", str(GENEVAL), "--n-samples", "2"]) == 0
    assert t2i_main([*args, "--dpg-prompts", str(DPG)]) == 0
    capsys.readouterr()
    assert [(s, n) for s, n, _ in geneval_walk(tmp_path / "out" / "geneval")] == [
        ("00000", "00000.png"), ("00000", "00001.png")]
    size = model.config.image_size
    assert Image.open(tmp_path / "out" / "dpg" / "0.png").size == (2 * size, 2 * size)
    assert t2i.SEED_STRIDE == 1000
