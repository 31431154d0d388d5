"""``unified-ar sample`` at scale: images streamed to disk, a killed run resumed, ranks sharing the
prompts, the GenEval / DPG-Bench folders, and bad input as one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unified_ar.commands import sample as sample_cmd
from unified_ar.commands.sample import main as sample_main
from unified_ar.eval.t2i import sample_index
from unified_helpers import tiny_model

FIXTURES = Path(__file__).parent / "fixtures" / "t2i"
PROMPTS = ["a red circle", "a blue square", "a green triangle", "two yellow squares", "one small circle",
           "three shapes", "a magenta triangle"]
SIZE = 6


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model = tiny_model(root / "tok")
    model.save_pretrained(root / "ckpt")
    return root / "ckpt"


def pixels(prompt: str, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, zlib.crc32(prompt.encode())]).integers(0, 256, (SIZE, SIZE, 3), np.uint8)


class FakeDraw:
    """An image a pure function of (prompt, seed), codes ``[seed, len(prompt)]``; records the seeds
    of every call and raises (a kill) on call ``fail_after``."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[list[int]] = []
        self.fail_after = fail_after

    def __call__(self, prompts, seeds):
        if len(self.calls) == self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls.append(list(seeds))
        pairs = list(zip(prompts, seeds))
        return [Image.fromarray(pixels(p, s)) for p, s in pairs], [[s, len(p)] for p, s in pairs]

    @property
    def drawn(self) -> list[int]:
        return [s for call in self.calls for s in call]


@pytest.fixture
def fake(monkeypatch):
    """The command's model side replaced: each run gets the FakeDraw set in ``fake.next``."""
    class Holder:
        next = FakeDraw()
    monkeypatch.setattr(sample_cmd, "load_draw", lambda *args: Holder.next)
    return Holder


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too: no half-written leftovers), by relative path."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def write_prompts(path: Path, prompts=PROMPTS) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def run(saved, prompts: Path, out: Path, *flags) -> int:
    return sample_main(["--model", str(saved), "--prompts", str(prompts), "--out", str(out), *flags])


# -- a killed run resumes ----------------------------------------------------------------------
def test_a_killed_run_resumes_drawing_only_the_missing_prompts(saved, tmp_path, fake, monkeypatch):
    monkeypatch.setattr(sample_cmd, "GRID_IMAGES", 4)
    prompts = write_prompts(tmp_path / "p.jsonl")
    fake.next = FakeDraw()
    assert run(saved, prompts, tmp_path / "whole", "--seed", "5", "--max-batch", "2") == 0
    assert fake.next.drawn == [5 + i for i in range(7)]

    fake.next = FakeDraw(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        run(saved, prompts, tmp_path / "run", "--seed", "5", "--max-batch", "2")
    out = tmp_path / "run"
    assert sorted(f.name for f in out.glob("*.png")) == [f"{i:05d}.png" for i in range(4)]  # streamed
    assert not (out / "samples.json").exists() and not (out / "grid.png").exists()
    (out / ".00004.png.999.tmp").write_bytes(b"half")  # a torn write of a killed run

    fake.next = again = FakeDraw()
    assert run(saved, prompts, out, "--seed", "5", "--max-batch", "2") == 0
    assert again.calls == [[9, 10], [11]]  # only prompts 4..6
    assert tree(out) == tree(tmp_path / "whole")
    record = json.loads((out / "samples.json").read_text())
    assert [(s["prompt"], s["seed"], s["file"], s["codes"]) for s in record["samples"]] == [
        (p, 5 + i, f"{i:05d}.png", [5 + i, len(p)]) for i, p in enumerate(PROMPTS)]
    for i, p in enumerate(PROMPTS):
        assert np.array_equal(np.asarray(Image.open(out / f"{i:05d}.png")), pixels(p, 5 + i))
    assert Image.open(out / "grid.png").size == (2 * SIZE + 2, 2 * SIZE + 2)  # the first GRID_IMAGES

    fake.next = none = FakeDraw()
    assert run(saved, prompts, out, "--seed", "5", "--max-batch", "2") == 0 and none.calls == []


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_one_shot_images(saved, tmp_path):
    """The real model in a subprocess, killed (SIGKILL) once its first images are on disk."""
    prompts = write_prompts(tmp_path / "p.txt", [f"{p} {n}" for n in range(2) for p in PROMPTS[:4]])
    out = tmp_path / "run"
    flags = ["--seed", "3", "--max-batch", "1", "--device", "cpu"]
    cmd = [sys.executable, "-m", "unified_ar.cli", "sample", "--model", str(saved), "--prompts", str(prompts),
           "--out", str(out), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("0*.png")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    kept = {f.name for f in out.glob("0*.png")}
    assert 1 <= len(kept) < 8 and not (out / "samples.json").exists()
    assert run(saved, prompts, out, *flags) == 0
    assert run(saved, prompts, tmp_path / "whole", *flags) == 0
    assert tree(out) == tree(tmp_path / "whole")


# -- ranks -------------------------------------------------------------------------------------
def test_ranks_share_the_prompts_and_give_the_one_rank_files(saved, tmp_path, monkeypatch, capsys):
    from unified_helpers import randomize_

    from unified_ar.modeling import UnifiedARModel

    model = UnifiedARModel.from_pretrained(saved)
    randomize_(model.llm, seed=4, scale=2.0)  # images that depend on the seed
    model.save_pretrained(tmp_path / "model")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:5])
    assert run(tmp_path / "model", prompts, tmp_path / "one", "--max-batch", "1") == 0
    one = tree(tmp_path / "one")
    assert len({one[f"{i:05d}.png"] for i in range(5)}) == 5
    capsys.readouterr()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run(tmp_path / "model", prompts, tmp_path / "two", "--max-batch", "1") == 0
    assert sorted(f.name for f in (tmp_path / "two").glob("*.png")) == ["00001.png", "00003.png"]
    assert "3 of 5 images still missing" in capsys.readouterr().err  # 0, 2 and 4
    assert not (tmp_path / "two" / "samples.json").exists()
    monkeypatch.setenv("RANK", "0")
    assert run(tmp_path / "model", prompts, tmp_path / "two", "--max-batch", "1") == 0  # completes the set
    assert tree(tmp_path / "two") == one


def test_each_rank_draws_only_its_own_prompts(saved, tmp_path, fake, monkeypatch):
    prompts = write_prompts(tmp_path / "p.txt")
    monkeypatch.setenv("WORLD_SIZE", "3")
    for rank in (2, 0, 1):
        monkeypatch.setenv("RANK", str(rank))
        fake.next = draw = FakeDraw()
        assert run(saved, prompts, tmp_path / "out", "--seed", "10") == 0
        assert draw.drawn == [10 + i for i in range(rank, 7, 3)]
    assert (tmp_path / "out" / "samples.json").is_file()
    monkeypatch.setenv("RANK", "3")
    assert run(saved, prompts, tmp_path / "out") == 2


# -- a folder sampled otherwise ----------------------------------------------------------------
@pytest.mark.parametrize("flags, named", [
    (["--seed", "6"], "seed: 5 there, 6 now"), (["--guidance-scale", "2"], "cfg_scale: 3.0 there, 2.0 now"),
    (["--temperature", "0.5"], "temperature: 1.0 there, 0.5 now"), (["--top-k", "3"], "top_k: 0 there, 3 now"),
])
def test_a_folder_sampled_with_other_settings_is_refused(saved, tmp_path, fake, capsys, flags, named):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    assert run(saved, prompts, tmp_path / "out", "--seed", "5") == 0
    before = tree(tmp_path / "out")
    fake.next = draw = FakeDraw()
    capsys.readouterr()
    assert run(saved, prompts, tmp_path / "out", "--seed", "5", *flags) == 2
    assert named in capsys.readouterr().err and draw.calls == [] and tree(tmp_path / "out") == before


def test_a_changed_prompt_is_refused_naming_its_image(saved, tmp_path, fake, capsys):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    assert run(saved, prompts, tmp_path / "out") == 0
    write_prompts(prompts, [PROMPTS[0], "another prompt", PROMPTS[2]])
    capsys.readouterr()
    assert run(saved, prompts, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "00001.png was drawn for 'a blue square'" in err and "p.txt (prompt 1," in err


def test_a_folder_of_unknown_images_is_refused(saved, tmp_path, fake, capsys):
    (tmp_path / "out").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "out" / "00000.png")
    assert run(saved, write_prompts(tmp_path / "p.txt"), tmp_path / "out") == 2
    assert "holds images but no sampling.json" in capsys.readouterr().err


# -- GenEval / DPG-Bench -----------------------------------------------------------------------
def bench(saved, out: Path, flag: str, source: Path, *extra) -> int:
    return sample_main(["--model", str(saved), flag, str(source), "--out", str(out), "--seed", "7", *extra])


def test_geneval_layout_over_two_ranks(saved, tmp_path, fake, monkeypatch, capsys):
    lines = [line for line in (FIXTURES / "geneval_metadata.jsonl").read_text().split("\n") if line.strip()]
    fake.next = FakeDraw()
    assert bench(saved, tmp_path / "one", "--geneval-metadata", FIXTURES / "geneval_metadata.jsonl") == 0
    assert "evaluate_images.py" in capsys.readouterr().out
    folder = tmp_path / "one" / "geneval"
    assert sorted(os.listdir(folder)) == [f"{i:05d}" for i in range(len(lines))]
    for i, line in enumerate(lines):
        assert (folder / f"{i:05d}" / "metadata.jsonl").read_text() == line
        assert sorted(os.listdir(folder / f"{i:05d}" / "samples")) == [f"{k:05d}.png" for k in range(4)]
        prompt = json.loads(line)["prompt"]
        for k in range(4):
            img = np.asarray(Image.open(folder / f"{i:05d}" / "samples" / f"{k:05d}.png"))
            assert np.array_equal(img, pixels(prompt, 7 + sample_index(i, k)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        fake.next = draw = FakeDraw()
        assert bench(saved, tmp_path / "two", "--geneval-metadata", FIXTURES / "geneval_metadata.jsonl") == 0
        assert sorted({(s - 7) // 1000 for s in draw.drawn}) == list(range(rank, len(lines), 2))
    assert tree(tmp_path / "two") == tree(tmp_path / "one")
    fake.next = none = FakeDraw()
    assert bench(saved, tmp_path / "two", "--geneval-metadata", FIXTURES / "geneval_metadata.jsonl") == 0
    assert none.calls == []


def test_dpg_layout_over_two_ranks(saved, tmp_path, fake, monkeypatch, capsys):
    from unified_ar.eval.t2i import read_dpg_prompts

    prompts = read_dpg_prompts(FIXTURES / "dpg_prompts")
    fake.next = FakeDraw()
    assert bench(saved, tmp_path / "one", "--dpg-prompts", FIXTURES / "dpg_prompts", "--max-batch", "3") == 0
    assert f"dist_eval.sh {tmp_path / 'one' / 'dpg'} {SIZE}" in capsys.readouterr().out
    folder = tmp_path / "one" / "dpg"
    assert sorted(os.listdir(folder)) == sorted(f"{p.name}.png" for p in prompts)  # the scorer reads every file
    for p in prompts:
        grid = np.asarray(Image.open(folder / f"{p.name}.png"))
        tiles = [grid[:SIZE, :SIZE], grid[:SIZE, SIZE:], grid[SIZE:, :SIZE], grid[SIZE:, SIZE:]]
        for k, tile in enumerate(tiles):
            assert np.array_equal(tile, pixels(p.prompt, 7 + sample_index(p.index, k)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    writing = tmp_path / "two" / "dpg" / ".10.png.999.tmp"  # a grid of rank 1's prompt being written
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        fake.next = FakeDraw()
        assert bench(saved, tmp_path / "two", "--dpg-prompts", FIXTURES / "dpg_prompts") == 0
        if rank == 1:
            writing.write_bytes(b"half")  # before rank 0 starts
    assert writing.exists()  # rank 0 cleans only its own prompts' leftovers
    writing.unlink()
    assert tree(tmp_path / "two") == tree(tmp_path / "one")


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case, named", [
    ("no model", "nope: model folder not found"),
    ("not a model", "not a unified model folder (no unified_config.json)"),
    ("no prompts file", "missing.txt: prompts file not found"),
    ("empty prompts", "empty.txt: no prompts"),
    ("bad json line", "bad.jsonl:2: invalid JSON"),
    ("no prompt key", "nokey.jsonl:1: a JSON line needs a string \"prompt\""),
    ("not utf-8", "binary.txt: not UTF-8 text"),
    ("no geneval file", "missing.jsonl: GenEval metadata file not found"),
    ("no dpg txt", "no prompt files (*.txt)"),
    ("out is a file", "exists and is not a folder"),
])
def test_bad_input_is_one_line_naming_the_file(saved, tmp_path, fake, capsys, case, named):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    (tmp_path / "nokey.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "binary.txt").write_bytes(b"a red \xff circle\n")
    (tmp_path / "good.txt").write_text("a red circle\n")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "empty_dir").mkdir()
    model, out = str(saved), str(tmp_path / "out")
    argv = {
        "no model": ["--model", str(tmp_path / "nope"), "--prompts", str(tmp_path / "good.txt")],
        "not a model": ["--model", str(tmp_path / "empty_dir"), "--prompts", str(tmp_path / "good.txt")],
        "no prompts file": ["--model", model, "--prompts", str(tmp_path / "missing.txt")],
        "empty prompts": ["--model", model, "--prompts", str(tmp_path / "empty.txt")],
        "bad json line": ["--model", model, "--prompts", str(tmp_path / "bad.jsonl")],
        "no prompt key": ["--model", model, "--prompts", str(tmp_path / "nokey.jsonl")],
        "not utf-8": ["--model", model, "--prompts", str(tmp_path / "binary.txt")],
        "no geneval file": ["--model", model, "--geneval-metadata", str(tmp_path / "missing.jsonl")],
        "no dpg txt": ["--model", model, "--dpg-prompts", str(tmp_path / "empty_dir")],
        "out is a file": ["--model", model, "--prompts", str(tmp_path / "good.txt")],
    }[case]
    out = str(tmp_path / "a_file") if case == "out is a file" else out
    fake.next = draw = FakeDraw()
    assert sample_main([*argv, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "Traceback" not in err, err
    assert draw.calls == [] and not (tmp_path / "out" / "sampling.json").exists()
