"""train-vq / train-toklip: batches resume exactly; both stages run end to end on a tiny world."""
from __future__ import annotations

import json
from itertools import islice

import pytest
import torch

from unified_ar.train.stage_vq import TensorBatches


def test_tensor_batches_resume_exactly_and_cover_an_epoch():
    data = TensorBatches({"x": torch.arange(12)}, batch_size=4, seed=3)
    run = list(islice(data.iter_from(0, 0, 1), 6))
    resumed = list(islice(data.iter_from(run[2][0], 0, 1), 3))
    for (pos_a, a), (pos_b, b) in zip(run[3:], resumed):
        assert pos_a == pos_b and torch.equal(a["x"], b["x"])
    assert sorted(torch.cat([b["x"] for _, b in run[:3]]).tolist()) == list(range(12))  # one epoch, no repeats
    ranks = [next(data.iter_from(0, r, 2))[1]["x"] for r in range(2)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())
    with pytest.raises(ValueError, match="cannot fill one batch"):
        next(TensorBatches({"x": torch.arange(3)}, 4, 0).iter_from(0, 0, 1))


def test_patch_code_consistency_counts_disagreements_and_shared_codes():
    from unified_ar.train.stage_vq import patch_code_consistency

    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)  # 2x2 patches of 2x2 pixels: 8 cells
    images[0, :, :2, :2] = 255  # one white cell; the other seven are black
    images[1, 0, 2:, 2:] = 255  # one red cell
    codes = torch.tensor([5, 1, 1, 2, 1, 1, 1, 5])  # black gets 1 five times, 2 once; white and red share 5
    result = patch_code_consistency(images, codes, patch=2)
    assert result["patch_code_agreement"] == pytest.approx(5 / 6)  # only black cells repeat
    assert result["patches_per_code"] == pytest.approx((2 + 1 + 1) / 3)  # code 5: white and red


@pytest.mark.slow
def test_vq_then_toklip_stage_on_a_tiny_world(tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from unified_ar.train.shapes.world import WorldConfig
    from unified_ar.train.shapes.writer import write_world
    from unified_ar.train.stage_toklip import main as toklip_main
    from unified_ar.train.stage_vq import main as vq_main

    world = tmp_path / "world"
    write_world(world, {"train": 16, "val": 8, "test": 2}, 0, WorldConfig())
    common = ["--data.root", str(world), "--train.max_steps", "2", "--train.micro_batch_size", "4",
              "--train.progress_bar", "false"]
    assert vq_main(["--config", "configs/vq/shapes.yaml", "--out", str(tmp_path / "vq"), *common,
                    "--model.foreground_loss_steps", "2"]) == 0
    vq_eval = json.loads((tmp_path / "vq" / "eval.json").read_text())
    assert vq_eval["images"] == 8 and 0 < vq_eval["codebook_usage"] <= 1
    assert 0 < vq_eval["patch_code_agreement"] <= 1 and vq_eval["patches_per_code"] >= 1
    assert toklip_main(["--config", "configs/toklip/shapes.yaml", "--out", str(tmp_path / "toklip"),
                        "--vq_path", str(tmp_path / "vq" / "export"), *common]) == 0
    result = json.loads((tmp_path / "toklip" / "eval.json").read_text())
    assert result["retrieval_candidates"] == 8 and 0 <= result["color_accuracy"] <= 1
    mistakes = sum(result["color_confusions"].values())
    assert mistakes == round((1 - result["color_accuracy"]) * result["color_images"])
    assert all(t != p for t, p in (k.split("->") for k in result["color_confusions"]))
    assert toklip_main(["--config", "configs/toklip/shapes.yaml", "--eval", str(tmp_path / "toklip" / "export"),
                        "--data.root", str(world)]) == 0


def test_shapes_yaml_configs_equal_the_presets():
    from unified_ar.config import load_config
    from unified_ar.tokenizer.toklip import TOKLIP_PRESETS
    from unified_ar.tokenizer.vq import VQ_PRESETS
    from unified_ar.train.stage_toklip import ToklipStageConfig
    from unified_ar.train.stage_vq import VQStageConfig

    assert load_config(VQStageConfig, "configs/vq/shapes.yaml").model == VQ_PRESETS["VQ-shapes"]
    toklip = load_config(ToklipStageConfig, "configs/toklip/shapes.yaml").model
    preset = TOKLIP_PRESETS["TokLIP-shapes"]
    assert (toklip.vision_cfg, toklip.text_cfg) == (preset.vision_cfg, preset.text_cfg)


def test_vq_foreground_schedule_beyond_max_steps_is_a_clear_error(tmp_path):
    from unified_ar.config import ConfigError
    from unified_ar.train.stage_vq import main as vq_main

    with pytest.raises(ConfigError, match=r"model.foreground_loss_steps = 1500 > train.max_steps = 700.*"
                                          r"--model.foreground_loss_steps 700"):
        vq_main(["--config", "configs/vq/shapes.yaml", "--out", str(tmp_path / "vq"), "--train.max_steps", "700"])
    assert not (tmp_path / "vq").exists()  # refused before anything was written


def test_color_prompts_fill_every_named_field_and_reject_unknown_ones():
    from unified_ar.config import ConfigError
    from unified_ar.train.stage_toklip import color_prompts

    assert color_prompts(["a {color} object."], "red") == ["a red object."]
    both = color_prompts(["a {size} {color} {shape}.", "{color}"], "blue")
    assert len(both) == 2 * 3 + 1 and "a small blue triangle." in both and both[-1] == "blue"
    full = color_prompts(["a {size} {color} {shape} in the {position}."], "cyan")
    assert len(full) == len(set(full)) == 2 * 3 * 9 and "a large cyan circle in the bottom right." in full
    with pytest.raises(ConfigError, match="unknown: texture"):
        color_prompts(["a {color} {texture} thing."], "red")
    with pytest.raises(ConfigError, match="must name {color}"):
        color_prompts(["a {shape}."], "red")
    from unified_ar.config import load_config
    from unified_ar.train.stage_toklip import ToklipStageConfig

    with pytest.raises(ConfigError, match="eval.color_prompts: 'a {shape}.' must name {color}"):
        load_config(ToklipStageConfig, "configs/toklip/shapes.yaml", ["--eval.color_prompts", '["a {shape}."]'])
