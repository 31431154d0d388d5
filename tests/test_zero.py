"""2-rank CPU runs of `unified-ar train` under torchrun at ZeRO-2 and ZeRO-3: the tiny unified model
trains on the Shapes world (loss goes down), saves per-rank checkpoints, and exports a directory
that UnifiedARModel.from_pretrained loads with full (gathered) weights."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from helpers_train import pretokenize_world, save_tiny_vq, stage_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def world_codes(shapes_world, tmp_path_factory):
    vq_dir = save_tiny_vq(tmp_path_factory.mktemp("vq"))
    return vq_dir, pretokenize_world(shapes_world, vq_dir, tmp_path_factory.mktemp("codes"))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_two_rank_zero_trains_saves_and_exports(shapes_world, world_codes, tmp_path, stage):
    from unified_ar.modeling import UnifiedARModel

    vq_dir, codes = world_codes
    run_dir = tmp_path / "run"
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(stage_config(shapes_world, vq_dir, codes, run_dir, zero_stage=stage,
                                                  save_every=4)))
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "unified_ar.train.stage_unified", "--config", str(config)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("trained 8 steps") == 1  # rank 0 reports

    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.85 * sum(losses[:2]) / 2, losses
    latest = (run_dir / "checkpoints" / "latest").read_text()
    assert latest == "step_00000008"
    assert sorted(p.name for p in (run_dir / "checkpoints" / latest).glob("rng_rank*.pt")) == ["rng_rank0.pt",
                                                                                              "rng_rank1.pt"]
    model = UnifiedARModel.from_pretrained(run_dir / "export")
    embed = model.llm.get_input_embeddings().weight
    assert embed.shape[0] == model.layout.padded_vocab_size and embed.shape[1] == 32  # gathered, not a shard
    batch = {k: torch.as_tensor(v) for k, v in _one_batch(model).items()}
    with torch.no_grad():
        assert torch.isfinite(model(batch).loss)


def _one_batch(model) -> dict:
    from unified_ar.sequences import generation_example

    ex = generation_example(model.layout, model.tokenizer, "a red circle", torch.arange(16) % 32, False)
    ids = torch.tensor([ex.input_ids])
    return {"input_ids": ids, "labels": torch.tensor([ex.labels]), "attention_mask": torch.ones_like(ids)}
