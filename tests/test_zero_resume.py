"""2 ranks under torchrun on mixed data (caption pairs and conversations), at ZeRO-2 and ZeRO-3: a run
SIGKILLed (the launcher and every rank at once) after a checkpoint and resumed with --resume ends
with the exported weights of an uninterrupted run (fp32 CPU, 1e-6), and metrics.jsonl continues
the steps (the killed tail dropped). tests/test_resume.py is the one-process version."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers_train import (kill_group, pretokenize_world, run_group, save_tiny_vq, stage_config, start_group,
                           tiny_toklip, torchrun_stage)

STEPS = 8
CASES = {
    "zero2-accum2": {"train": {"zero_stage": 2, "grad_accum_steps": 2}, "model": {}},
    "zero3-semantic": {"train": {"zero_stage": 3},
                       "model": {"semantic_gen_input": True, "image_position_embedding": True,
                                 "toklip": tiny_toklip()}},
}


@pytest.fixture(scope="module")
def world_codes(shapes_world, tmp_path_factory):
    vq_dir = save_tiny_vq(tmp_path_factory.mktemp("vq"))
    return vq_dir, pretokenize_world(shapes_world, vq_dir, tmp_path_factory.mktemp("codes"))


def _config(shapes_world, world_codes, run_dir, case) -> str:
    """Unpacked micro-batches of 2 records (so a rank's may be all captions or all conversations),
    caption dropout on (its randomness must replay on resume), a checkpoint every 2 steps."""
    vq_dir, codes = world_codes
    data = stage_config(shapes_world, vq_dir, codes, run_dir, model=CASES[case]["model"],
                        collate={"pack": False, "caption_dropout": 0.3}, max_steps=STEPS, save_every=2,
                        keep_checkpoints=STEPS, **CASES[case]["train"])
    path = run_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def _steps(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _kill_after_a_checkpoint(config, run_dir, log) -> int:
    """Start the run; once a checkpoint is complete and a later step has been logged (a tail that
    resume must drop), SIGKILL the launcher and both ranks. Returns the step of the last checkpoint."""
    latest = run_dir / "checkpoints" / "latest"
    with open(log, "w") as out:  # a file, not a pipe nobody reads: the ranks would block on a full pipe
        proc = start_group(torchrun_stage(config), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:
        while not (latest.is_file() and any(r["step"] > int(latest.read_text()[5:]) for r in _steps(run_dir))):
            assert proc.poll() is None, f"the run ended before it was killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint and later step within 120 s"
            time.sleep(0.01)
    finally:
        kill_group(proc)
    saved = int(latest.read_text()[5:])
    assert not (run_dir / "export").exists() and saved < STEPS
    return saved


def _exported(run_dir) -> dict[str, torch.Tensor]:
    files = sorted((run_dir / "export").glob("*.safetensors"))
    assert files, f"{run_dir / 'export'}: no weights"
    return {f"{file.stem}.{name}": tensor for file in files for name, tensor in load_file(file).items()}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("case", CASES)
def test_two_rank_sigkill_then_resume_matches_uninterrupted_run(shapes_world, world_codes, tmp_path, case):
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = run_group(torchrun_stage(_config(shapes_world, world_codes, full, case)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]

    config = _config(shapes_world, world_codes, killed, case)
    saved = _kill_after_a_checkpoint(config, killed, tmp_path / "killed.log")
    proc = run_group(torchrun_stage(config, "--resume"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"resumed from step {saved} " in proc.stdout + proc.stderr

    reference, resumed = _exported(full), _exported(killed)
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], atol=1e-6, rtol=0, msg=name)
    assert [r["step"] for r in _steps(killed)] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in _steps(killed)] == pytest.approx([r["loss"] for r in _steps(full)], abs=1e-6)
