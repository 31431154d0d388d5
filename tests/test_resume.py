"""A run killed with SIGKILL after a checkpoint and resumed ends with the same weights as an
uninterrupted run (fp32 CPU, 1e-6), and the data order continues exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "run_tiny_train.py"
ARGS = ["--train.max_steps", "12", "--train.save_every", "4", "--train.micro_batch_size", "4",
        "--train.grad_accum_steps", "2", "--train.lr", "0.01", "--train.warmup_steps", "3",
        "--train.progress_bar", "false", "--train.keep_checkpoints", "5"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _run(run_dir: Path, *extra: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *ARGS, *extra], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    _run(tmp_path / "full")

    killed = tmp_path / "killed"
    latest = killed / "checkpoints" / "latest"
    # Micro-batches from position 10 on are slow; the step-4 checkpoint needs 8, step 8 needs 16.
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), *ARGS, "--sleep-from", "10"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (latest.is_file() and latest.read_text() == "step_00000004"):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    time.sleep(1.0)  # into the slow part, past position 10
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "export").exists()
    _run(killed, "--resume")

    full = load_file(tmp_path / "full" / "export" / "model.safetensors")
    resumed = load_file(killed / "export" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], atol=1e-6, rtol=0, msg=name)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # lines of the killed tail were dropped on resume
    full_losses = [json.loads(line)["loss"] for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    resumed_losses = [json.loads(line)["loss"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert resumed_losses == pytest.approx(full_losses, abs=1e-6)


def test_latest_pointer_names_only_complete_checkpoints(tmp_path):
    from unified_ar.train.checkpoint import latest_tag

    assert latest_tag(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step_00000004")
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        latest_tag(tmp_path)
    (tmp_path / "checkpoints" / "step_00000004").mkdir()
    assert latest_tag(tmp_path) == "step_00000004"
