"""`unified-ar demo --fast`: every stage runs, losses fall, outputs exist and parse."""
from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from unified_ar.config import ConfigError


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    from unified_ar import cli

    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--fast", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_fast_demo_outputs(fast_demo):
    from unified_ar.eval.report import load_metrics

    metrics = json.loads((fast_demo / "metrics.json").read_text())
    load_metrics(fast_demo)  # the report's strict schema
    run = metrics["runs"]["toklip"]
    assert 0.0 <= run["vqa"]["overall"] <= 1.0
    assert set(run["vqa"]["by_type"]) == {"color", "shape", "count", "existence", "position", "size"}
    for key in ("color", "shape", "size", "position", "count", "exact"):
        assert 0.0 <= run["t2i"][key] <= 1.0
    assert (fast_demo / "report.html").is_file()
    for name in ("grid_toklip.png", "loss_toklip.png", "recon.png"):
        Image.open(fast_demo / "figures" / name).verify()
    images = sorted((fast_demo / "runs" / "toklip" / "eval_t2i" / "images").glob("*.png"))
    assert len(images) == metrics["config"]["eval_val_images"]
    assert metrics["tokenizers"]["vq"]["val_psnr"] > 10
    stage = yaml.safe_load((fast_demo / "runs" / "toklip" / "unified" / "config.yaml").read_text())
    weights = {source["kind"]: source["weight"] for source in stage["data"]["sources"]}
    assert metrics["config"]["conversation_weight"] == 3.0  # fast.yaml, as the default demo
    assert weights == {"conversations": 3.0, "captions": 1.0}
    assert stage["train"]["optimizer"] == "muon"  # configs/train/unified.yaml
    for split, count in (("", "eval_val_images"), ("_test", "test_images")):  # val and held-out pairs
        assert set(run[f"vqa{split}"]["by_type"]) >= {"color", "shape"}, split
        drawn = sorted((fast_demo / "runs" / "toklip" / f"eval_t2i{split}" / "images").glob("*.png"))
        assert len(drawn) == metrics["config"][count], split
    assert run["t2i"]["cfg_scale"] == run["t2i_test"]["cfg_scale"] == metrics["config"]["cfg_scale"]
    report = (fast_demo / "report.html").read_text()
    assert "toklip (val)" in report and "toklip (held-out pairs)" in report


@pytest.mark.slow
def test_eval_vqa_without_prompt_flags_scores_what_the_demo_reports(fast_demo, tmp_path):
    """The export's generation_config.json holds the prompt format it was trained with."""
    from unified_ar.eval.vqa_runner import main as eval_vqa

    metrics = json.loads((fast_demo / "metrics.json").read_text())
    export = fast_demo / "runs" / "toklip" / "unified" / "export"
    assert json.loads((export / "generation_config.json").read_text())["prompts"]["short_answer_suffix"] == ""
    assert eval_vqa(["--benchmark", "vqav2", "--data", str(fast_demo / "world"), "--split", "test",
                     "--model", str(export), "--out", str(tmp_path / "eval")]) == 0
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scored["overall"] / 100 == metrics["runs"]["toklip"]["vqa_test"]["overall"]


@pytest.mark.slow
def test_fast_demo_losses_fall(fast_demo):
    for stage in ("align", "unified"):
        path = fast_demo / "runs" / "toklip" / stage / "metrics.jsonl"
        losses = [json.loads(line)["loss"] for line in path.read_text().splitlines()]
        k = max(len(losses) // 4, 1)
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
        assert last < first, (stage, first, last)
    for part in ("vq", "toklip"):
        losses = [json.loads(l)["loss"] for l in (fast_demo / part / "metrics.jsonl").read_text().splitlines()]
        k = max(len(losses) // 4, 1)
        assert sum(losses[-k:]) / k < sum(losses[:k]) / k, part


@pytest.mark.slow
def test_rerun_skips_finished_stages(fast_demo, capsys):
    from unified_ar import cli

    before = json.loads((fast_demo / "metrics.json").read_text())
    assert cli.main(["demo", "--fast", "--out", str(fast_demo)]) == 0
    printed = capsys.readouterr().out
    assert "runs/toklip/unified: done already" in printed and "$ unified-ar train" not in printed
    after = json.loads((fast_demo / "metrics.json").read_text())
    assert after["runs"] == before["runs"] and after["stage_seconds"] == before["stage_seconds"]


def test_demo_bad_override_is_a_config_error(tmp_path):
    from unified_ar.demo import main

    with pytest.raises(ConfigError, match="cfg_scal"):
        main(["--fast", "--out", str(tmp_path), "--cfg_scal", "2"])
    with pytest.raises(ConfigError, match="conversation_weight: must be > 0"):
        main(["--fast", "--out", str(tmp_path), "--conversation_weight", "0"])
    assert not (tmp_path / "world").exists()  # refused before any stage ran


@pytest.mark.slow
def test_ablation_runs_side_by_side(fast_demo):
    """--comprehension-features both adds the raw-VQ-codes run on the same directory; the
    finished TokLIP stages are reused and the report shows both columns."""
    from unified_ar import cli
    from unified_ar.eval.report import markdown_tables

    assert cli.main(["demo", "--fast", "--out", str(fast_demo), "--comprehension-features", "both"]) == 0
    metrics = json.loads((fast_demo / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"toklip", "vq"}
    saved = json.loads((fast_demo / "runs" / "vq" / "unified" / "export" / "unified_config.json").read_text())
    assert saved["comprehension_features"] == "vq"
    assert ("| question type | toklip (val) | toklip (held-out pairs) | vq (val) | vq (held-out pairs) |"
            in markdown_tables(metrics))
    Image.open(fast_demo / "figures" / "grid_vq.png").verify()


def test_machine_names_the_cpu_model(tmp_path):
    """metrics.json's machine line carries the CPU's model name: two machines of one kind differ
    in the demo's seconds and kernels' rounding (docs/DEMO.md, "Determinism")."""
    from unified_ar.demo import cpu_model

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9R14\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9R14"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: \n")  # an empty name is not a name
    assert cpu_model(cpuinfo) != ""


@pytest.mark.slow
def test_demo_export_copied_elsewhere_samples_and_answers(fast_demo, tmp_path):
    """The export is self-contained: copied to a new folder, with the demo's VQ and TokLIP folders
    (which training read) moved away, it draws and answers with the same outputs as in place."""
    import shutil

    import torch

    from unified_ar import UnifiedARModel
    from unified_ar.sampling import ImageSamplingConfig, answer_questions, generate_images

    export = fast_demo / "runs" / "toklip" / "unified" / "export"
    record = json.loads((fast_demo / "world" / "conversations_train.json").read_text())[0]
    photo = fast_demo / "world" / record["image"]
    cfg = ImageSamplingConfig(guidance_scale=1.5)

    def outputs(folder):
        model = UnifiedARModel.from_pretrained(folder)
        drawn = generate_images(model, ["a large red circle"], seeds=[0], cfg=cfg).codes[0]
        answer = answer_questions(model, [photo], ["What color is the circle?"])[0]
        return drawn, answer

    here = outputs(export)
    shutil.copytree(export, tmp_path / "moved")
    parts = [fast_demo / "vq", fast_demo / "toklip"]
    for part in parts:
        part.rename(part.with_name(part.name + "_away"))
    try:
        there = outputs(tmp_path / "moved")
    finally:
        for part in parts:
            part.with_name(part.name + "_away").rename(part)
    assert torch.equal(here[0], there[0]) and here[1] == there[1]
