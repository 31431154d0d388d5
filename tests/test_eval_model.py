"""eval-vqa / eval-t2i end to end with a tiny unified model (random weights: wiring, not quality)."""
from __future__ import annotations

import json

import pytest

from unified_ar.eval.t2i import main as eval_t2i
from unified_ar.eval.vqa_runner import main as eval_vqa
from unified_helpers import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = tiny_model(tmp_path_factory.mktemp("tok"))
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(out)
    return out


def test_eval_vqa_with_a_model_resumes(model_dir, shapes_world, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = ["--model", str(model_dir), "--benchmark", "vqav2", "--data", str(shapes_world), "--split", "test",
            "--limit", "6", "--batch-size", "4", "--max-new-tokens", "3", "--out", str(tmp_path / "run")]
    assert eval_vqa(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["num_questions"] == 6 and first["answer_processing"] == "llava"
    lines = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert eval_vqa(args) == 0  # everything answered: nothing is asked again, same metrics
    assert json.loads(capsys.readouterr().out) == first


def test_eval_t2i_with_a_model(model_dir, shapes_world, tmp_path, capsys):
    args = ["--model", str(model_dir), "--prompts", str(shapes_world / "t2i_prompts_test.jsonl"),
            "--limit", "3", "--out", str(tmp_path / "t2i"), "--geneval-out", str(tmp_path / "geneval")]
    assert eval_t2i(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_images"] == 3 and 0.0 <= metrics["shapes_eval"]["exact"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "t2i" / "images").iterdir()) == [
        "0000.png", "0001.png", "0002.png", "sampling.json"]
    assert (tmp_path / "geneval" / "00002" / "samples" / "00000.png").is_file()
    # the same settings resume (nothing to draw); other settings never reuse those images
    assert eval_t2i(args) == 0
    capsys.readouterr()
    assert eval_t2i([*args, "--cfg-scale", "2.0"]) == 2
    assert "cfg_scale: 3.0 there, 2.0 now" in capsys.readouterr().err  # the folder's default was used
    (tmp_path / "t2i" / "images" / "sampling.json").unlink()
    assert eval_t2i(args) == 2
    assert "holds images but no sampling.json" in capsys.readouterr().err
