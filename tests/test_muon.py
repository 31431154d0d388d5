"""Muon (train/muon.py) and the engine's ``train.optimizer: muon``."""
from __future__ import annotations

import pytest
import torch

from helpers_train import PatternData, TinyLM, collate_pattern
from unified_ar.train.config import TrainConfig
from unified_ar.train.muon import MuonAdamW, muon_matrices, orthogonalize


def test_orthogonalize_maps_wide_and_tall_matrices_near_orthogonal():
    torch.manual_seed(0)
    for shape in ((3, 16, 48), (2, 48, 16)):
        grads = torch.randn(*shape) * 1e-3
        out = orthogonalize(grads)
        assert out.shape == grads.shape and out.dtype == grads.dtype
        singular = torch.linalg.svdvals(out.float())
        # the quintic iteration lands the singular values in ~[0.7, 1.2], not on 1 (by design)
        assert singular.min() > 0.5 and singular.max() < 1.5, singular


def test_muon_takes_linear_weights_but_not_embeddings_head_or_norms(tmp_path):
    from unified_helpers import tiny_model

    model = tiny_model(tmp_path)
    chosen = muon_matrices(model)
    names = {name for name, p in model.named_parameters() if id(p) in chosen}
    assert any("q_proj" in n for n in names) and any("down_proj" in n for n in names)
    assert any(n.startswith("projector.") for n in names)
    assert not any("embed" in n or "lm_head" in n or "norm" in n or n.endswith("bias") for n in names)


def test_muon_rejects_non_matrices_and_adamw_state():
    with pytest.raises(ValueError, match="non-matrix"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(4))], "use_muon": True}], lr=1e-3)
    params = [torch.nn.Parameter(torch.zeros(4, 4))]
    adamw_state = torch.optim.AdamW(params).state_dict()
    with pytest.raises(ValueError, match="trained with train.optimizer adamw"):
        MuonAdamW([{"params": params, "use_muon": True}], lr=1e-3).load_state_dict(adamw_state)


def test_muon_needs_zero_stage_0_and_fp32_weights():
    with pytest.raises(ValueError, match="muon needs zero_stage 0"):
        TrainConfig(optimizer="muon", zero_stage=2)
    with pytest.raises(ValueError, match="muon needs fp32 weights"):
        TrainConfig(optimizer="muon", precision="bf16")


def _batches(count: int, seed: int = 0) -> list[dict]:
    data = PatternData(size=8 * count)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    return [collate_pattern([data[i] for i in order[k * 8:(k + 1) * 8]]) for k in range(count)]


def test_muon_engine_learns_and_resumes_exactly(tmp_path):
    from unified_ar.train.engine import build_engine

    config = TrainConfig(max_steps=12, micro_batch_size=8, lr=3e-2, warmup_steps=2, progress_bar=False,
                         optimizer="muon", precision="fp32")
    batches = _batches(12)
    torch.manual_seed(0)
    engine = build_engine(TinyLM(), config)
    assert type(engine.ds.optimizer).__name__ == "MuonAdamW"
    first = [engine.micro_step(b).loss for b in batches[:6]]
    engine.save_checkpoint(tmp_path, "half", {})
    rest = [engine.micro_step(b).loss for b in batches[6:]]
    assert rest[-1] < 0.5 * first[0]
    torch.manual_seed(1)  # different initial weights: the checkpoint must restore everything
    resumed = build_engine(TinyLM(), config)
    resumed.load_checkpoint(tmp_path, "half")
    assert [resumed.micro_step(b).loss for b in batches[6:]] == rest
