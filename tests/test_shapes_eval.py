"""ShapesEval (pixel judge), eval-t2i on image folders, GenEval export, FID, TokLIP score."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from unified_ar.eval.fid import fid_folders, frechet_distance, gaussian_stats, load_extractor
from unified_ar.eval.shapes_eval import detect, evaluate_images, judge
from unified_ar.eval.t2i import export_geneval, main as t2i_main, read_prompts, toklip_score
from unified_ar.train.shapes.world import Object, Scene, WorldConfig, render, sample_scene


def scenes(n, seed=0, config=WorldConfig()):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, config, "test") for _ in range(n)]


def test_detect_one_object():
    cfg = WorldConfig()
    scene = Scene((Object("triangle", "yellow", "large", (0, 2)),))
    (det,) = detect(render(scene, cfg), cfg)
    assert (det.color, det.shape, det.size, det.cell) == ("yellow", "triangle", "large", (0, 2))
    assert det.fill == pytest.approx(0.5, abs=0.06)  # a triangle fills half its box


def test_hits_name_the_wrong_attribute():
    cfg = WorldConfig()
    drawn = Scene((Object("circle", "red", "small", (1, 1)),))
    spec = {"objects": [{"shape": "circle", "color": "blue", "size": "small", "cell": [1, 1]}]}
    result = judge(render(drawn, cfg), spec, cfg)
    assert result["hits"] == [{"color": False, "shape": True, "size": True, "position": True}]
    assert result["count"] and not result["exact"]


def test_renders_score_one_and_survive_blur():
    cfg = WorldConfig()
    sc = scenes(24)
    images = [render(s, cfg) for s in sc]
    specs = [s.to_dict() for s in sc]
    summary = evaluate_images(images, specs, cfg).summary()
    assert {k: summary[k] for k in ("color", "shape", "size", "position", "count", "exact")} == dict.fromkeys(
        ("color", "shape", "size", "position", "count", "exact"), 1.0)
    by = summary["by_objects"]
    assert sum(group["num_images"] for group in by.values()) == 24
    assert sum(group["num_objects"] for group in by.values()) == summary["num_objects"]
    assert all(sc_n.isdigit() and group["exact"] == 1.0 for sc_n, group in by.items())
    wrong = [np.zeros_like(im) if len(s.objects) == 1 else im for s, im in zip(sc, images)]  # blank 1-object scenes
    split = evaluate_images(wrong, specs, cfg).by_objects
    assert split["1"]["color"] == 0.0 and split["1"]["exact"] == 0.0
    assert all(group["exact"] == 1.0 for n, group in split.items() if n != "1")
    # VQ reconstructions are blurred and dimmed at the edges; the judge must still read them.
    blurred = [np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(1.0))) for im in images]
    assert evaluate_images(blurred, specs, cfg).exact == 1.0


def test_jittered_world_scores_one():
    cfg = WorldConfig(jitter=3)
    sc = scenes(16, seed=3, config=cfg)
    assert evaluate_images([render(s, cfg) for s in sc], [s.to_dict() for s in sc], cfg).exact == 1.0


def _copy_as_index(world, prompts, folder, order):
    folder.mkdir()
    for p, src in zip(prompts, order):
        shutil.copy(world / "images" / "test" / f"test_{src['image_id']:08d}.png", folder / f"{p['index']:04d}.png")


def test_cli_on_world_test_images_and_shuffled(shapes_world, tmp_path, capsys):
    prompts_file = shapes_world / "t2i_prompts_test.jsonl"
    prompts = read_prompts(prompts_file)
    _copy_as_index(shapes_world, prompts, tmp_path / "own", prompts)
    assert t2i_main(["--images", str(tmp_path / "own"), "--prompts", str(prompts_file),
                     "--out", str(tmp_path / "out_own")]) == 0
    own = json.loads(capsys.readouterr().out)["shapes_eval"]
    assert own["exact"] == 1.0 and own["color"] == 1.0 and own["num_images"] == len(prompts)

    shuffled = prompts[1:] + prompts[:1]  # every prompt gets its neighbour's image
    _copy_as_index(shapes_world, prompts, tmp_path / "shuffled", shuffled)
    assert t2i_main(["--images", str(tmp_path / "shuffled"), "--prompts", str(prompts_file),
                     "--out", str(tmp_path / "out_shuffled")]) == 0
    wrong = json.loads(capsys.readouterr().out)["shapes_eval"]
    assert wrong["exact"] <= 0.2 and wrong["position"] <= 0.6
    assert (tmp_path / "out_shuffled" / "metrics.md").is_file()


def test_missing_image_is_a_clear_error(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"index": 3, "prompt": "a red circle", "spec": {"objects": []}}) + "\n")
    (tmp_path / "imgs").mkdir()
    assert t2i_main(["--images", str(tmp_path / "imgs"), "--prompts", str(prompts), "--out", str(tmp_path / "o")]) == 2
    assert "0003.png" in capsys.readouterr().err


def test_geneval_layout(tmp_path):
    prompts = [{"index": 7, "prompt": "a red circle", "tag": "single_object"}]
    export_geneval(prompts, [np.zeros((8, 8, 3), np.uint8)], tmp_path)
    assert json.loads((tmp_path / "00007" / "metadata.jsonl").read_text()) == {
        "prompt": "a red circle", "tag": "single_object"}
    assert (tmp_path / "00007" / "samples" / "00000.png").is_file()


def test_frechet_distance_closed_forms():
    mu = torch.tensor([1.0, 2.0])
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    # Diagonal covariances: sum over dims of (m1-m2)^2 + (sqrt(v1) - sqrt(v2))^2.
    # dim 0: (0-3)^2 + (2-1)^2 = 10; dim 1: (0-0)^2 + (3-2)^2 = 1 -> 11
    d = frechet_distance(torch.tensor([0.0, 0.0]), torch.diag(torch.tensor([4.0, 9.0])),
                         torch.tensor([3.0, 0.0]), torch.diag(torch.tensor([1.0, 4.0])))
    assert d == pytest.approx(11.0, abs=1e-9)


class MeanColour(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_folders_with_torchscript_extractor(tmp_path):
    with pytest.raises(ValueError, match="--fid-extractor"):
        load_extractor(None)
    path = tmp_path / "extractor.pt"
    torch.jit.save(torch.jit.script(MeanColour()), str(path))
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    for i in range(6):
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / "a" / f"{i}.png")
        Image.fromarray(255 - img).save(tmp_path / "b" / f"{i}.png")
    assert fid_folders(tmp_path / "a", tmp_path / "a", path) == pytest.approx(0.0, abs=1e-9)
    feats = torch.rand(20, 3)
    assert gaussian_stats(feats)[1].shape == (3, 3)
    assert fid_folders(tmp_path / "a", tmp_path / "b", path) > 0


class FakeTokLIP:
    """Pooled image embedding = mean RGB; text embedding fixed per prompt length."""

    def encode_image(self, pixels):
        return None, pixels.mean(dim=(2, 3))

    def encode_text(self, ids):
        return torch.tensor([[1.0, 0.0, 0.0]]) if ids.shape[1] == 1 else torch.tensor([[0.0, 1.0, 0.0]])


def test_toklip_score_is_mean_cosine():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255  # pixels -> [1, -1, -1]
    # image 1 vs [1,0,0]: cos = 1 / sqrt(3); image 2 vs [0,1,0]: cos = -1 / sqrt(3); mean 0
    score = toklip_score(FakeTokLIP(), lambda s: [1] * len(s.split()), [red, red], ["red", "two words"])
    assert score == pytest.approx(0.0, abs=1e-6)
    assert toklip_score(FakeTokLIP(), lambda s: [1], [red], ["red"]) == pytest.approx(1 / np.sqrt(3), abs=1e-6)


def test_cli_render_self_check_and_shuffle_control(shapes_world, tmp_path, capsys):
    prompts_file = str(shapes_world / "t2i_prompts_test.jsonl")
    assert t2i_main(["--render", "--prompts", prompts_file, "--out", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["shapes_eval"]["exact"] == 1.0
    assert t2i_main(["--images", str(tmp_path / "r" / "renders"), "--shuffle-seed", "0",
                     "--prompts", prompts_file, "--out", str(tmp_path / "s")]) == 0
    shuffled = json.loads(capsys.readouterr().out)
    assert shuffled["shuffled_with_seed"] == 0 and shuffled["shapes_eval"]["exact"] <= 0.3
