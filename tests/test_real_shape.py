"""The README's real-scale commands, run as a user runs them, on the real-shape fixture
(tests/real_shape.py: a Qwen2 LLM with a byte-level BPE tokenizer without BOS, LlamaGen and
TokLIP checkpoints in their official layouts, non-square COCO-style photos in every mode plus a
truncated one, LLaVA-665k JSON with text-only records, caption parquet, VQAv2 / POPE / MME).

The shipped configs (configs/train/real_*.yaml) are copied with their roots moved (``/models``
and ``/data`` to the fixture) and run from a working folder exactly as the README writes them,
plus the overrides a 2-core CPU needs (widths, steps, fp32, sdpa). The chain:

pretokenize -> align (semantic_gen_input on, and off) -> unified on 2 ranks at ZeRO-3 with mixed
data under torchrun (SIGKILL after a checkpoint, ``--resume``: the weights equal an uninterrupted
run's) and under the ``deepspeed`` launcher -> sft -> export, copied to another folder and loaded
from there with the fixture's model folder gone -> sample, chat, eval-vqa on VQAv2, POPE and MME.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers_train import kill_group
from real_shape import IMAGE_SIZE, build_real_shape
from unified_ar.config import packaged_config

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
REAL_CONFIGS = ("real_align", "real_unified_zero3", "real_sft")
# The schedule is constant (no warmup, no decay), so a run stopped early and resumed to another
# max_steps follows the same updates as a run planned for that many steps.
STEPS = ["--train.warmup_steps", "0", "--train.min_lr_ratio", "1.0", "--train.lr", "3.0e-3",
         "--train.micro_batch_size", "1", "--train.grad_accum_steps", "2", "--train.save_every", "2",
         "--train.log_every", "1", "--train.progress_bar", "false", "--train.report_to", "none",
         "--train.precision", "fp32", "--collate.max_length", "192", "--data.max_bad_fraction", "0.1"]
UNIFIED_STEPS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONPATH=str(Path(__file__).parent))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _flow(mapping: dict) -> str:
    return yaml.safe_dump(mapping, default_flow_style=True).strip()


class Rig:
    """The fixture, a working folder holding ``configs/train/real_*.yaml`` with the roots moved,
    and the overrides that shrink the real model to the fixture's width on a CPU."""

    def __init__(self, root: Path):
        self.fx = build_real_shape(root / "models")
        self.work = root / "work"
        (self.work / "configs" / "train").mkdir(parents=True)
        for name in REAL_CONFIGS:
            text = packaged_config(f"train/{name}.yaml").read_text()
            for real, here in (("/models/", f"{self.fx.root}/"), ("/data/images", str(self.fx.image_root)),
                               ("/data/", f"{self.fx.root}/data/")):
                text = text.replace(real, here)
            (self.work / "configs" / "train" / f"{name}.yaml").write_text(text)
        self.model_overrides = [
            "--model.llm.attn_implementation", "sdpa", "--model.llm.dtype", "float32",
            "--model.vq.overrides", _flow(self.fx.vq_overrides),
            "--model.toklip.overrides", _flow(self.fx.toklip_overrides), "--model.image_size", str(IMAGE_SIZE)]

    def cli(self, *args: str) -> tuple[int, str, str]:
        """``unified-ar ARGS`` in the working folder, in a fresh process."""
        proc = subprocess.run([sys.executable, "-m", "unified_ar.cli", *args], cwd=self.work, env=_env(),
                              capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr

    def launch(self, launcher: str, *args: str, wait: bool = True):
        """The unified stage module on 2 ranks under ``torchrun`` or the ``deepspeed`` launcher."""
        port = str(_free_port())
        if launcher == "torchrun":
            head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_addr", "127.0.0.1", "--master_port", port, "-m"]
        else:  # as the README writes it: deepspeed --num_gpus N --module ...
            head = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", port,
                    "--module"]
        command = [*head, "unified_ar.train.stage_unified", *args]
        if not wait:
            return subprocess.Popen(command, cwd=self.work, env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        proc = subprocess.run(command, cwd=self.work, env=_env(), capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout[-2000:] + "\n" + proc.stderr[-5000:]
        return proc


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Rig:
    rig = Rig(tmp_path_factory.mktemp("real_shape"))
    fx = rig.fx
    code, out, err = rig.cli("pretokenize", str(fx.captions_parquet), str(fx.llava_json),
                             "--config", "configs/train/real_align.yaml", "--max-bad-fraction", "0.1",
                             *rig.model_overrides)
    assert code == 0, err
    assert f"{len(fx.images)} images" in out and "1 failed" in out and fx.bad_image in err
    align = ["--config", "configs/train/real_align.yaml", "--train.max_steps", "2", *STEPS, *rig.model_overrides]
    rig.launch("deepspeed", *align)  # README: deepspeed --num_gpus N --module ... real_align.yaml
    code, out, err = rig.cli("train", *align, "--run_dir", "runs/real_align_no_sgi",
                             "--model.semantic_gen_input", "false", "--train.trainable", "[projector.]")
    assert code == 0, err[-3000:]
    return rig


def _unified(rig: Rig, run: str, *extra: str) -> list[str]:
    return ["--config", "configs/train/real_unified_zero3.yaml", "--run_dir", run, *STEPS, *extra]


def _kill_after_checkpoint(rig: Rig, run: str) -> None:
    proc = rig.launch("torchrun", *_unified(rig, run, "--train.max_steps", "1000"), wait=False)
    latest = rig.work / run / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not latest.is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    kill_group(proc)  # SIGKILL to the launcher and each rank (torchrun gives ranks sessions of their own)
    tag = latest.read_text()
    assert int(tag.split("_")[1]) < UNIFIED_STEPS, f"killed too late ({tag})"
    assert not (rig.work / run / "export").exists()


def test_unified_zero3_mixed_data_resumes_exactly_and_chains_to_sft(rig):
    """ZeRO-3, 2 ranks, captions + conversations, semantic_gen_input on: killed with SIGKILL after a
    checkpoint and resumed, the weights equal an uninterrupted run's; then sft and export."""
    rig.launch("torchrun", *_unified(rig, "runs/real_unified", "--train.max_steps", str(UNIFIED_STEPS)))
    _kill_after_checkpoint(rig, "runs/killed")
    rig.launch("torchrun", *_unified(rig, "runs/killed", "--train.max_steps", str(UNIFIED_STEPS), "--resume"))
    losses = {run: [json.loads(line)["loss"] for line in (rig.work / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("runs/real_unified", "runs/killed")}
    assert losses["runs/killed"] == pytest.approx(losses["runs/real_unified"], abs=1e-6), losses
    full = load_file(rig.work / "runs/real_unified/export/llm.safetensors")
    resumed = load_file(rig.work / "runs/killed/export/llm.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], atol=1e-6, rtol=0, msg=name)
    records = [json.loads(line) for line in (rig.work / "runs/killed/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, UNIFIED_STEPS + 1))
    assert all(r["text_tokens"] > 0 for r in records) and any(r["image_tokens"] > 0 for r in records)

    code, _, err = rig.cli("train", "--config", "configs/train/real_sft.yaml", "--train.max_steps", "2", *STEPS)
    assert code == 0, err[-3000:]
    config = yaml.safe_load((rig.work / "runs/real_sft/config.yaml").read_text())
    assert config["model"]["semantic_gen_input"] is True  # taken from init_from, not restated
    code, out, err = rig.cli("export", "runs/real_sft", "--out", "my_model")
    assert code == 0, err[-3000:]
    for name in ("llm", "vq", "toklip", "projector", "gen_projector"):  # the offline export equals the final one
        final = load_file(rig.work / "runs/real_sft/export" / f"{name}.safetensors")
        offline = load_file(rig.work / "my_model" / f"{name}.safetensors")
        assert final.keys() == offline.keys() and all(torch.equal(final[k], offline[k]) for k in final), name


def test_unified_under_the_deepspeed_launcher_without_semantic_gen_input(rig):
    """The README's ``deepspeed --num_gpus N --module ...`` line, from an align export with
    semantic_gen_input off (so ZeRO-3 meets the other module set)."""
    rig.launch("deepspeed", *_unified(rig, "runs/unified_no_sgi", "--init_from", "runs/real_align_no_sgi/export",
                                      "--train.max_steps", "2"))
    config = json.loads((rig.work / "runs/unified_no_sgi/export/unified_config.json").read_text())
    assert config["semantic_gen_input"] is False


@pytest.fixture(scope="module")
def moved_model(rig, tmp_path_factory):
    """``unified-ar export``'s folder copied to a new place; the fixture's model folder (the LLM, VQ
    and TokLIP files training started from) moved away while the copy is used."""
    if not (rig.work / "my_model").is_dir():
        pytest.skip("the export is made by test_unified_zero3_mixed_data_resumes_exactly_and_chains_to_sft")
    model = tmp_path_factory.mktemp("elsewhere") / "model"
    shutil.copytree(rig.work / "my_model", model)
    hidden = rig.fx.root.with_name(rig.fx.root.name + "_moved")
    rig.fx.root.rename(hidden)
    yield model
    hidden.rename(rig.fx.root)


def test_moved_export_samples_chats_and_answers(rig, moved_model, tmp_path, monkeypatch, capsys):
    from unified_ar.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle and a blue square\ntwo green triangles\n")
    assert main(["sample", "--model", str(moved_model), "--prompts", str(prompts), "--out",
                 str(tmp_path / "samples")]) == 0
    pngs = sorted((tmp_path / "samples").glob("0*.png"))
    assert len(pngs) == 2 and all(_size(p) == (IMAGE_SIZE, IMAGE_SIZE) for p in pngs)

    photo = tmp_path / "photo.jpg"  # a non-square JPEG that exists only here, not the fixture's
    _write_photo(photo)
    (tmp_path / "broken.jpg").write_bytes(photo.read_bytes()[:200])
    lines = [f"/image {tmp_path / 'broken.jpg'}", f"/image {photo}", "What is in the picture?",
             "/draw a red circle", "What color is the shape?", "/quit"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    capsys.readouterr()
    assert main(["chat", "--model", str(moved_model), "--out", str(tmp_path / "drawings"),
                 "--max-new-tokens", "8"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].startswith("cannot attach:") and "broken.jpg" in printed[1]
    assert printed[2].startswith("(attached") and printed[4].startswith("(drew")
    assert len(printed) == 6 and (tmp_path / "drawings" / "drawing_000.png").is_file()


def test_moved_export_evaluates_three_benchmark_formats(rig, moved_model, tmp_path, monkeypatch):
    from unified_ar.cli import main

    hidden = rig.fx.root.with_name(rig.fx.root.name + "_moved")  # the benchmark files moved too
    for name, data in (("vqav2", "vqav2"), ("pope", "pope"), ("mme", "MME_Benchmark_release_version")):
        out = tmp_path / name
        assert main(["eval-vqa", "--model", str(moved_model), "--benchmark", name,
                     "--data", str(hidden / "eval" / data), "--out", str(out), "--batch-size", "4"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        answered = (out / "predictions.jsonl").read_text().splitlines()
        assert len(answered) >= 10 and metrics, name


def _write_photo(path: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(path, quality=90)


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size
