"""2-rank CPU runs under torchrun at ZeRO-2 and ZeRO-3: loss goes down, checkpoints are written,
and the exported directory loads with from_pretrained (ZeRO-3 shards gathered)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers_train import PatternData, TinyLM, collate_pattern

SCRIPT = Path(__file__).parent / "run_tiny_train.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_two_rank_zero_trains_saves_and_exports(tmp_path, stage):
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(SCRIPT), str(tmp_path),
               "--train.zero_stage", str(stage), "--train.max_steps", "8", "--train.micro_batch_size", "4",
               "--train.lr", "0.03", "--train.warmup_steps", "1", "--train.save_every", "4",
               "--train.progress_bar", "false"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]

    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2, losses
    checkpoint = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text()
    assert sorted(p.name for p in checkpoint.glob("rng_rank*.pt")) == ["rng_rank0.pt", "rng_rank1.pt"]

    exported = TinyLM.from_pretrained(tmp_path / "export")
    fresh = TinyLM()
    assert exported.embed.weight.shape == fresh.embed.weight.shape  # full, not a ZeRO-3 partition
    batch = collate_pattern([PatternData()[i] for i in range(16)])
    with torch.no_grad():
        assert exported(batch).loss.item() < 0.8 * fresh(batch).loss.item()
