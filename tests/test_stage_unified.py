"""`unified-ar train --config FILE` on the Shapes world with the tiny unified model, one process;
stage configs shipped in configs/train/ are valid; offline export of a checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from helpers_train import pretokenize_world, save_tiny_vq, stage_config
from unified_ar.config import ConfigError, load_config, packaged_config
from unified_ar.train.stage_unified import StageConfig, check_stage


@pytest.fixture(scope="module")
def world_codes(shapes_world, tmp_path_factory):
    vq_dir = save_tiny_vq(tmp_path_factory.mktemp("vq"))
    return vq_dir, pretokenize_world(shapes_world, vq_dir, tmp_path_factory.mktemp("codes"))


@pytest.mark.parametrize("name", ["align", "unified", "sft", "real_unified_zero3", "real_unified_zero2_7b"])
def test_packaged_stage_configs_load(name):
    path = packaged_config(f"train/{name}.yaml")
    check_stage(load_config(StageConfig, path), str(path))


def test_stage_checks_name_the_problem(tmp_path):
    bad = StageConfig(stage="align")
    bad.data.sources = [{"kind": "text", "path": "x.jsonl"}]
    with pytest.raises(ConfigError, match="stage align trains the projector only"):
        check_stage(bad, "align.yaml")
    tokens = load_config(StageConfig, packaged_config("train/align.yaml"), ["--model.comprehension_features", "tokens"])
    with pytest.raises(ConfigError, match="align.yaml: model.comprehension_features tokens has no projector"):
        check_stage(tokens, "align.yaml")


@pytest.mark.slow
def test_train_command_trains_exports_and_resumes(shapes_world, world_codes, tmp_path):
    from unified_ar.cli import main
    from unified_ar.modeling import UnifiedARModel
    from unified_ar.train.export import main as export_main

    vq_dir, codes = world_codes
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(stage_config(shapes_world, vq_dir, codes, tmp_path / "run", save_every=4)))
    assert main(["train", "--config", str(config), "--train.max_steps", "6"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"text_loss", "image_loss", "padding", "tokens_per_s", "records_seen", "truncated"} <= set(records[0])
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[0]["padding"] < 0.25

    # --resume continues to the new max_steps from the step-6 checkpoint
    assert main(["train", "--config", str(config), "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))

    model = UnifiedARModel.from_pretrained(tmp_path / "run" / "export")
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "offline")]) == 0
    offline = UnifiedARModel.from_pretrained(tmp_path / "offline")
    for (name, a), (_, b) in zip(model.state_dict().items(), offline.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_train_command_stops_on_bad_data_naming_records(shapes_world, world_codes, tmp_path, capsys):
    from unified_ar.cli import main

    vq_dir, codes = world_codes
    rows = [json.loads(line) for line in (shapes_world / "captions_train.jsonl").read_text().splitlines()]
    for row in rows[::2]:
        row["image"] = "images/train/missing.png"
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = stage_config(shapes_world, vq_dir, codes, tmp_path / "run")
    data["data"]["sources"] = [{"kind": "captions", "path": str(tmp_path / "captions.jsonl")}]
    data["data"]["image_root"] = str(shapes_world)
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "records are bad" in err and "captions.jsonl:" in err and "missing.png" in err


def test_init_from_takes_the_stages_loss_weights_and_rejects_a_changed_model(tmp_path):
    from dataclasses import replace

    from unified_helpers import tiny_config, tiny_model
    from unified_ar.train.stage_unified import build_model

    saved = tiny_model(tmp_path / "tok").save_pretrained(tmp_path / "saved")
    config = StageConfig(init_from=str(saved), model=replace(tiny_config(), image_loss_weight=4.0))
    model = build_model(config)
    assert (model.config.image_loss_weight, model.config.text_loss_weight) == (4.0, 1.0)
    with pytest.raises(ConfigError, match=r"model.comprehension_features = 'toklip' \(init_from has 'vq'\)"):
        build_model(replace(config, model=tiny_config(comprehension_features="toklip")))
    with pytest.raises(ConfigError, match=r"model.image_position_embedding = True \(init_from has False\)"):
        build_model(replace(config, model=tiny_config(image_position_embedding=True)))


def test_init_from_takes_the_model_from_the_saved_one_and_compares_only_written_keys(tmp_path):
    from unified_helpers import tiny_model
    from unified_ar.train.stage_unified import build_model

    saved = tiny_model(tmp_path / "tok", image_position_embedding=True, image_loss_weight=2.0)
    saved = saved.save_pretrained(tmp_path / "saved")
    config = StageConfig(init_from=str(saved))  # no model section: the dataclass defaults differ
    assert not config.model.image_position_embedding
    model = build_model(config, written={})
    assert model.config.image_position_embedding and model.image_pos_embed is not None
    assert model.config.image_loss_weight == 2.0  # unwritten: the saved model's
    written = {"image_loss_weight": 4.0, "image_position_embedding": True, "llm": {"preset": "tiny"}}
    model = build_model(config, written=written)  # llm: the saved model's, as before
    assert (model.config.image_loss_weight, model.config.text_loss_weight) == (4.0, 1.0)
    with pytest.raises(ConfigError, match=r"model.image_position_embedding = False \(init_from has True\)"):
        build_model(config, written={"image_position_embedding": False})
    with pytest.raises(ConfigError, match=r"model.projector = .*depth=3.* \(init_from has .*depth=2"):
        build_model(config, written={"projector": {"depth": 3}})


@pytest.mark.slow
def test_a_stage_without_a_model_section_trains_from_init_from(shapes_world, world_codes, tmp_path, capsys):
    """align -> unified -> sft: sft.yaml has no model section; the saved model's config is used,
    and the run's config.yaml shows it."""
    from unified_ar.cli import main

    vq_dir, codes = world_codes
    first = stage_config(shapes_world, vq_dir, codes, tmp_path / "unified", max_steps=1,
                         model={"image_position_embedding": True, "image_loss_weight": 2.0})
    (tmp_path / "unified.yaml").write_text(yaml.safe_dump(first))
    assert main(["train", "--config", str(tmp_path / "unified.yaml")]) == 0
    sft = {key: value for key, value in first.items() if key != "model"}
    sft.update(stage="sft", run_dir=str(tmp_path / "sft"), init_from=str(tmp_path / "unified" / "export"))
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(sft))
    assert main(["train", "--config", str(tmp_path / "sft.yaml"), "--model.text_loss_weight", "0.5"]) == 0
    resolved = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text())["model"]
    assert resolved["image_position_embedding"] is True and resolved["comprehension_features"] == "vq"
    assert (resolved["image_loss_weight"], resolved["text_loss_weight"]) == (2.0, 0.5)
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "sft.yaml"), "--model.image_position_embedding", "false"]) == 2
    assert "model.image_position_embedding = False (init_from has True)" in capsys.readouterr().err
