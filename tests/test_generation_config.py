"""generation_config.json: a model folder's prompt format and sampling defaults, read by every command."""
from __future__ import annotations

import json

import pytest

from unified_ar.cli import main as cli_main
from unified_ar.generation_config import GENERATION_CONFIG, SHORT_ANSWER, GenerationConfig
from unified_helpers import tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model whose folder asks bare questions and draws with guidance 1.25."""
    root = tmp_path_factory.mktemp("model")
    model = tiny_model(root / "tok")
    model.generation_config = GenerationConfig().updated(
        {"prompts": {"short_answer_suffix": ""}, "image": {"guidance_scale": 1.25}}, "test")
    model.save_pretrained(root / "export")
    return root / "export"


def test_the_folder_holds_the_settings_and_loading_reads_them(saved):
    from unified_ar.modeling import UnifiedARModel

    data = json.loads((saved / GENERATION_CONFIG).read_text())
    assert data["prompts"]["short_answer_suffix"] == "" and data["image"]["guidance_scale"] == 1.25
    loaded = UnifiedARModel.from_pretrained(saved).generation_config
    assert loaded.prompts.short_answer_suffix == "" and loaded.image.guidance_scale == 1.25
    assert loaded.text.answer_max_new_tokens == 16  # unwritten keys keep their defaults


def test_a_folder_without_the_file_gets_the_defaults(tmp_path):
    assert GenerationConfig.load(tmp_path) == GenerationConfig()
    assert GenerationConfig().prompts.short_answer_suffix == SHORT_ANSWER


def test_a_bad_file_is_one_line_naming_the_file_and_key(saved, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    (broken / GENERATION_CONFIG).write_text(json.dumps({"image": {"guidance": 2.0}}))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    assert cli_main(["sample", "--model", str(broken), "--prompts", str(prompts), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and GENERATION_CONFIG in err and "image.guidance: unknown key" in err


@pytest.mark.parametrize("flags, expected", [([], 1.25), (["--guidance-scale", "2"], 2.0), (["--no-cfg"], None)])
def test_sample_takes_the_models_guidance_unless_a_flag_overrides(saved, tmp_path, flags, expected):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    out = tmp_path / "out"
    assert cli_main(["sample", "--model", str(saved), "--prompts", str(prompts), "--out", str(out), *flags]) == 0
    assert json.loads((out / "samples.json").read_text())["settings"]["guidance_scale"] == expected


def test_chat_session_draws_with_the_models_guidance(saved, tmp_path):
    from unified_ar.commands.chat import ChatSession
    from unified_ar.modeling import UnifiedARModel

    model = UnifiedARModel.from_pretrained(saved)
    assert ChatSession(model, tmp_path).image_cfg.guidance_scale == 1.25
    session = ChatSession(model, tmp_path, guidance_scale=4.0, max_new_tokens=3)
    assert session.image_cfg.guidance_scale == 4.0 and session.text_cfg.max_new_tokens == 3


@pytest.mark.parametrize("flags, suffix", [([], ""), (["--short-answer-suffix", "Be brief."], "\nBe brief.")])
def test_eval_vqa_asks_in_the_models_prompt_format(saved, shapes_world, tmp_path, flags, suffix):
    out = tmp_path / "eval"
    assert cli_main(["eval-vqa", "--benchmark", "vqav2", "--data", str(shapes_world), "--split", "val",
                     "--model", str(saved), "--out", str(out), "--limit", "3", "--max-new-tokens", "2",
                     *flags]) == 0
    questions = json.loads((shapes_world / "vqa" / "val_questions.json").read_text())["questions"][:3]
    asked = [json.loads(line)["prompt"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert asked == [q["question"] + suffix for q in questions]


def test_a_stage_from_init_from_keeps_the_saved_settings_and_replaces_the_written_keys(saved):
    from unified_ar.train.stage_unified import StageConfig, build_model

    config = StageConfig(init_from=str(saved))
    model = build_model(config, written={}, written_generation={"image": {"guidance_scale": 2.5}})
    assert model.generation_config.image.guidance_scale == 2.5
    assert model.generation_config.prompts.short_answer_suffix == ""  # the saved model's, not the default
    fresh = build_model(StageConfig(init_from=str(saved)), written={}, written_generation={})
    assert fresh.generation_config.image.guidance_scale == 1.25
