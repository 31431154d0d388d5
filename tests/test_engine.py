"""The engine and the generic loop on a tiny model, one process (1-rank gloo group)."""
from __future__ import annotations

import json

import pytest
import torch

from helpers_train import PatternData, TinyLM, collate_pattern
from unified_ar.train.config import TrainConfig
from unified_ar.train.data.sampler import MapBatches
from unified_ar.train.engine import cosine_schedule, deepspeed_config, select_trainable


def _config(**overrides) -> TrainConfig:
    base = dict(max_steps=12, micro_batch_size=8, lr=3e-2, warmup_steps=2, progress_bar=False,
                export_final=True)
    base.update(overrides)
    return TrainConfig(**base)


def test_deepspeed_config_follows_train_config():
    ds = deepspeed_config(_config(zero_stage=3, offload_optimizer=True, offload_params=True,
                                  grad_accum_steps=4, grad_clip=0.5))
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["gradient_accumulation_steps"] == 4
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is torch.cuda.is_available()
    # ZeRO-0 fp32: the engine clips itself, DeepSpeed must not clip a second time.
    assert deepspeed_config(_config(precision="fp32"))["gradient_clipping"] == 0.0
    overridden = deepspeed_config(_config(deepspeed_overrides={"zero_optimization": {"stage": 1}}))
    assert overridden["zero_optimization"]["stage"] == 1


def test_deepspeed_preset_files_are_the_generated_json():
    from unified_ar.config import packaged_config
    from unified_ar.train.engine import DEEPSPEED_PRESETS, preset_deepspeed_config

    for name in DEEPSPEED_PRESETS:
        path = packaged_config(f"deepspeed/{name}.json")
        assert json.loads(path.read_text()) == preset_deepspeed_config(name), f"{path} is stale"


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="offload_params needs zero_stage 3"):
        TrainConfig(zero_stage=2, offload_params=True)
    with pytest.raises(ValueError, match="zero_stage"):
        TrainConfig(zero_stage=4)
    with pytest.raises(ValueError, match="channels_last needs zero_stage 0"):
        TrainConfig(zero_stage=2, channels_last=True)


def test_cosine_schedule_warms_up_then_decays_to_floor():
    f = cosine_schedule(TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) < f(5) < f(9) <= 1.0
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(100) == pytest.approx(0.1)


def test_select_trainable_freezes_and_names_bad_prefixes():
    model = TinyLM()
    named = select_trainable(model, TrainConfig(trainable=["blocks."], frozen=["blocks.1."]))
    assert {n.split(".")[1] for n, _ in named} == {"0"}
    assert not model.embed.weight.requires_grad and not model.head.weight.requires_grad
    with pytest.raises(ValueError, match="'projector.' matches no parameter"):
        select_trainable(TinyLM(), TrainConfig(trainable=["projector."]))


def test_train_loop_learns_logs_and_exports(tmp_path):
    from unified_ar.train.loop import train

    torch.manual_seed(0)
    data = MapBatches(PatternData(), collate_pattern, micro_batch_size=8, seed=0)
    config = _config(grad_accum_steps=2, log_every=4)
    result = train(TinyLM(), data, config, tmp_path)
    assert result.steps == 12 and len(result.losses) == 12
    assert result.losses[-1] < 0.5 * result.losses[0]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert records[0]["lr"] == pytest.approx(3e-2 * cosine_schedule(config)(1))
    assert records[0]["grad_norm"] > 0 and records[0]["padding"] == 0.0 and records[0]["tokens_per_s"] > 0
    assert "token_loss" in records[0]
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_00000012"
    exported = TinyLM.from_pretrained(result.export_dir)
    data_batch = collate_pattern([PatternData()[i] for i in range(8)])
    assert exported(data_batch).loss.item() < result.losses[0]


def test_nonfinite_loss_is_skipped_then_stops_the_run(tmp_path):
    from unified_ar.train.loop import TrainingStopped, train

    # Every record is poisoned.
    poisoned = MapBatches(PatternData(size=16, poison=set(range(16))), collate_pattern, 8, seed=0)
    with pytest.raises(TrainingStopped, match="3 non-finite losses in a row"):
        train(TinyLM(), poisoned, _config(max_nonfinite_in_a_row=3, export_final=False), tmp_path / "a")
    assert (tmp_path / "a" / "checkpoints" / "latest").is_file()

    one_bad = MapBatches(PatternData(size=64, poison={0}), collate_pattern, 8, seed=0)
    result = train(TinyLM(), one_bad, _config(max_steps=6, export_final=False), tmp_path / "b")
    assert result.nonfinite_skipped == 1 and result.steps == 6  # 7 of the 8 micro-batches of epoch 0
    assert all(loss == loss for loss in result.losses)  # no NaN reached a step


def test_data_that_stops_yielding_is_a_clear_error(tmp_path):
    from unified_ar.train.loop import train

    class TwoBatches:
        def iter_from(self, position, rank, world_size):
            for i in range(position, 2):
                yield i + 1, collate_pattern([PatternData()[j] for j in range(8)])

    with pytest.raises(RuntimeError, match="TwoBatches.iter_from stopped yielding at data position 2"):
        train(TinyLM(), TwoBatches(), _config(export_final=False), tmp_path)


def test_autocast_precision_trains_and_step_dependent_models_get_global_step(tmp_path):
    from unified_ar.train.loop import train

    class StepAware(TinyLM):
        takes_global_step = True
        seen: list = []

        def forward(self, batch):
            StepAware.seen.append((batch["global_step"], torch.is_autocast_enabled("cpu")))
            return super().forward({k: v for k, v in batch.items() if k != "global_step"})

    torch.manual_seed(0)
    data = MapBatches(PatternData(), collate_pattern, micro_batch_size=8, seed=0)
    result = train(StepAware(), data, _config(precision="autocast_bf16", export_final=False), tmp_path)
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert StepAware.seen == [(step, True) for step in range(12)]


def test_channels_last_trains_with_nhwc_conv_weights(tmp_path):
    """DeepSpeed's init broadcast cannot view NHWC weights as bytes: the engine converts after it,
    in place, so the optimizer still updates the module's parameters."""
    from helpers_train import TinyOutput
    from unified_ar.train.loop import train
    from unified_ar.train.stage_vq import TensorBatches

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, batch):
            x = batch["pixels"]
            loss = (self.conv(x) - x.flip(1)).pow(2).mean()  # learn to swap the colour channels
            return TinyOutput(loss=loss, metrics={})

    torch.manual_seed(0)
    model = Conv()
    data = TensorBatches({"pixels": torch.rand(64, 3, 8, 8)}, batch_size=8, seed=0)
    result = train(model, data, _config(channels_last=True, export_final=False, lr=1e-2, max_steps=30), tmp_path)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv.weight.is_contiguous()
    assert result.losses[-1] < 0.5 * result.losses[0]
