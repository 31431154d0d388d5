"""LoRA fine-tuning of the LLM (``train.lora``, train/lora.py): the merged export gives the adapted
model's logits and loads without peft; the adapter export loads through its base; a LoRA run on the
Shapes world trains the adapters, the new vocabulary rows and the projector only, lowers its loss,
resumes and exports offline; ZeRO-2 and ZeRO-3 on 2 ranks train with LoRA."""
from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml

pytest.importorskip("peft", reason="train.lora needs peft (pip install -e '.[lora]')")

from helpers_train import pretokenize_world, run_group, save_tiny_vq, stage_config, torchrun_stage  # noqa: E402
from test_uniform_modules import _batches  # noqa: E402
from unified_ar.config import ConfigError, load_config, packaged_config  # noqa: E402
from unified_ar.modeling import UnifiedARModel  # noqa: E402
from unified_ar.train.config import LoRAConfig, TrainConfig  # noqa: E402
from unified_ar.train.lora import apply_lora  # noqa: E402
from unified_helpers import tiny_model  # noqa: E402

LORA = {"r": 4, "alpha": 8.0}


@pytest.fixture(scope="module")
def world_codes(shapes_world, tmp_path_factory):
    vq_dir = save_tiny_vq(tmp_path_factory.mktemp("vq"))
    return vq_dir, pretokenize_world(shapes_world, vq_dir, tmp_path_factory.mktemp("codes"))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    return tiny_model(root / "tok").save_pretrained(root / "model")


def _adapted(base_dir, **lora):
    """The saved tiny model with adapters whose B matrices and new rows are random (not the identity)."""
    model = apply_lora(UnifiedARModel.from_pretrained(base_dir), TrainConfig(lora=LoRAConfig(**{**LORA, **lora})),
                       base=str(base_dir))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(batch).logits


def test_packaged_lora_config_loads():
    from unified_ar.train.stage_unified import StageConfig, check_stage

    path = packaged_config("train/lora_sft.yaml")
    config = load_config(StageConfig, path)
    check_stage(config, str(path))
    assert config.train.lora is not None and config.train.lora.save == "merged"


def test_merged_export_gives_the_adapted_logits_and_loads_without_peft(base_dir, tmp_path, monkeypatch):
    model = _adapted(base_dir)
    batch = _batches(model)["both"]
    adapted = _logits(model, batch)
    assert (adapted - _logits(UnifiedARModel.from_pretrained(base_dir), batch)).abs().max() > 0.1  # not vacuous
    out = model.save_pretrained(tmp_path / "merged")
    assert not (out / "lora_base.json").exists() and not (out / "llm_adapter").exists()
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft fails from here on
    merged = UnifiedARModel.from_pretrained(out)
    assert all("lora" not in n and "base_layer" not in n for n, _ in merged.named_parameters())
    assert (_logits(merged, batch) - adapted).abs().max() <= 1e-4


def test_adapter_export_loads_through_its_base_and_refuses_a_changed_one(base_dir, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(base_dir, base)
    model = _adapted(base, save="adapter")
    batch = _batches(model)["both"]
    out = model.save_pretrained(tmp_path / "adapter")
    assert not (out / "llm.safetensors").exists()
    assert {p.name for p in (out / "llm_adapter").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((out / "lora_base.json").read_text())["base"] == str(base.resolve())
    loaded = UnifiedARModel.from_pretrained(out)
    assert (_logits(loaded, batch) - _logits(model, batch)).abs().max() <= 1e-4
    UnifiedARModel.from_pretrained(tmp_path / "adapter")  # base unchanged: loads
    other = tiny_model(tmp_path / "tok2", seed=5).save_pretrained(tmp_path / "other")
    shutil.copy(other / "llm.safetensors", base / "llm.safetensors")
    with pytest.raises(ValueError, match="is not the LLM the adapter was trained on"):
        UnifiedARModel.from_pretrained(out)


def test_lora_config_mistakes_are_one_line_errors(base_dir, tmp_path):
    from unified_ar.train.engine import build_engine

    def adapt(train, base=str(base_dir)):
        return apply_lora(UnifiedARModel.from_pretrained(base_dir), train, base=base)

    with pytest.raises(ConfigError, match="leave every adapter frozen; add 'llm'"):
        adapt(TrainConfig(lora=LoRAConfig(), trainable=["projector"]))
    with pytest.raises(ConfigError, match="save adapter: the adapter refers to its base"):
        adapt(TrainConfig(lora=LoRAConfig(save="adapter")), base=None)
    with pytest.raises(ConfigError, match="train.lora: Target modules"):
        adapt(TrainConfig(lora=LoRAConfig(target_modules=["no_such_proj"])))
    with pytest.raises(ValueError, match="lora.r must be >= 1"):
        LoRAConfig(r=0)
    with pytest.raises(ConfigError, match="train.lora: UnifiedARModel has no LoRA adapters"):
        build_engine(UnifiedARModel.from_pretrained(base_dir), TrainConfig(lora=LoRAConfig()))


def test_without_new_rows_the_codes_stay_indistinguishable(base_dir):
    """The codes' output rows start equal (the mean of the trained rows): with adapters alone they
    get equal logits whatever the hidden state, so such a run cannot learn to draw."""
    model = _adapted(base_dir, new_rows=False)
    start, stop = model.layout.image_id_range()
    logits = _logits(model, _batches(model)["both"])[..., start:stop]
    assert (logits - logits[..., :1]).abs().max() < 1e-5
    model = _adapted(base_dir)  # with the new rows
    logits = _logits(model, _batches(model)["both"])[..., start:stop]
    assert (logits - logits[..., :1]).abs().max() > 0.1


def _lora_stage(world, world_codes, run_dir, **train):
    vq_dir, codes = world_codes
    return stage_config(world, vq_dir, codes, run_dir, lora=LORA, **{"max_steps": 18, "lr": 1.0e-2, **train})


@pytest.mark.slow
def test_lora_run_lowers_its_loss_trains_only_adapters_resumes_and_exports(shapes_world, world_codes, tmp_path):
    from unified_ar.cli import main
    from unified_ar.train.export import main as export_main
    from unified_ar.train.stage_unified import StageConfig, build_model

    run_dir = tmp_path / "run"
    config = tmp_path / "lora.yaml"
    config.write_text(yaml.safe_dump(_lora_stage(shapes_world, world_codes, run_dir, save_every=8)))
    assert main(["train", "--config", str(config), "--train.max_steps", "16"]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records]
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses
    assert records[-1]["image_loss"] < 0.8 * records[0]["image_loss"]  # the new rows learn to draw

    assert main(["train", "--config", str(config), "--resume"]) == 0  # step 16 -> 18
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 19))

    exported = UnifiedARModel.from_pretrained(run_dir / "export")  # merged: a plain folder
    torch.manual_seed(0)  # the initial weights, as `unified-ar train` builds them
    initial = build_model(load_config(StageConfig, run_dir / "config.yaml")).llm
    start, stop = exported.layout.image_id_range()
    before = dict(initial.named_parameters())
    after = dict(exported.llm.named_parameters())
    embed, base_embed = after["model.embed_tokens.weight"], before["model.embed_tokens.token_adapter.base_layer.weight"]
    assert torch.equal(embed[:start], base_embed[:start])  # text rows: frozen
    assert not torch.equal(embed[start:stop], base_embed[start:stop])  # the codes' rows trained
    assert torch.equal(after["model.norm.weight"], before["model.norm.weight"])  # not a LoRA target: frozen
    q = "model.layers.0.self_attn.q_proj"
    assert not torch.equal(after[f"{q}.weight"], before[f"{q}.base_layer.weight"])  # the merged adapter

    assert export_main([str(run_dir), "--out", str(tmp_path / "offline")]) == 0
    offline = UnifiedARModel.from_pretrained(tmp_path / "offline")
    for (name, a), (_, b) in zip(exported.state_dict().items(), offline.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage,save", [(2, "merged"), (3, "adapter")])
def test_two_rank_zero_trains_with_lora(shapes_world, world_codes, base_dir, tmp_path, stage, save):
    run_dir = tmp_path / "run"
    data = _lora_stage(shapes_world, world_codes, run_dir, zero_stage=stage, max_steps=8)
    data["train"]["lora"] = {**LORA, "save": save}
    if save == "adapter":  # the adapter refers to its base: a saved model of the tiny VQ
        base = _saved_base(shapes_world, world_codes, tmp_path / "base")
        data.update(init_from=str(base), model={})
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(data))
    proc = run_group(torchrun_stage(config), timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses
    assert (run_dir / "export" / "lora_base.json").exists() == (save == "adapter")
    model = UnifiedARModel.from_pretrained(run_dir / "export")
    batch = _batches(model)["both"]
    with torch.no_grad():
        assert torch.isfinite(model(batch).logits).all()


def _saved_base(world, world_codes, directory):
    """The stage's model (tiny VQ, world tokenizer), built fresh and saved: an init_from folder."""
    from unified_ar.config import from_dict
    from unified_ar.train.stage_unified import StageConfig

    vq_dir, codes = world_codes
    config = from_dict(StageConfig, stage_config(world, vq_dir, codes, directory / "unused"), "base")
    torch.manual_seed(0)
    return UnifiedARModel.from_config(config.model).save_pretrained(directory)
