"""The demo report: page, figures and README tables from a hand-made OUT directory."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unified_ar.eval.report import (ReportError, ReportOptions, load_metrics, main, markdown_tables,
                                    read_loss_log, write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROMPTS = ["a red circle at the top left", "two blue squares", "a large green triangle", "a small cyan circle"]

METRICS = {
    "command": "unified-ar demo --out OUT --seed 0",
    "config": {"world": {"image_size": 96}, "llm": {"hidden_size": 128, "num_layers": 3}},
    "machine": "2 CPU cores, torch 2.13",
    "total_seconds": 1234.5,
    "stage_seconds": {"world": 12.25, "vq": 300.0, "toklip": 200.0, "runs/toklip/align": 100.0,
                      "runs/toklip/unified": 500.0},
    "tokenizers": {
        "vq": {"val_psnr": 31.456, "codebook_usage": 0.8125, "patch_code_agreement": 0.9712, "patches_per_code": 1.0625,
               "recon_shapes_eval": {"color": 1.0, "shape": 0.975, "size": 1.0, "position": 1.0,
                                     "count": 1.0, "exact": 0.9375, "num_images": 16, "num_objects": 32}},
        "toklip": {"r_at_1": 0.6875, "color_accuracy": 0.953},
    },
    "runs": {
        "toklip": {
            "vqa": {"overall": 0.8456, "by_type": {"color": 0.91, "shape": 0.875, "count": 0.8,
                                                   "existence": 0.7349, "position": 0.625, "size": 0.99}},
            "t2i": {"color": 0.96, "shape": 0.955, "size": 0.9, "position": 0.99, "count": 0.985,
                    "exact": 0.78, "cfg_scale": 1.0},
            "vqa_test": {"overall": 0.5, "by_type": {"color": 0.25, "shape": 0.5, "count": 0.75,
                                                     "existence": 0.5, "position": 0.5, "size": 0.5}},
            "t2i_test": {"color": 0.5, "shape": 0.5, "size": 0.75, "position": 1.0, "count": 1.0,
                         "exact": 0.25, "cfg_scale": 1.0},
            "interleaved": {"agreement": 0.8125, "questions": 48},
            "train": {"align": {"steps": 3, "seconds": 10.5, "final_loss": 2.5,
                                "metrics_jsonl": "runs/toklip/align/metrics.jsonl"},
                      "unified": {"steps": 4, "seconds": 40.25, "final_loss": 1.25,
                                  "metrics_jsonl": "runs/toklip/unified/metrics.jsonl"}},
        },
        "vq": {
            "vqa": {"overall": 0.6, "by_type": {"color": 0.5, "shape": 0.625, "count": 0.7,
                                                "existence": 0.55, "position": 0.5, "size": 0.755}},
            "t2i": {"color": 0.9, "shape": 0.85, "size": 0.8, "position": 0.95, "count": 0.9,
                    "exact": 0.555, "cfg_scale": 3.0},
            "train": {"unified": {"steps": 4, "seconds": 41.0, "final_loss": 1.5,
                                  "metrics_jsonl": "runs/vq/unified/metrics.jsonl"}},
        },
    },
}

EXPECTED_MARKDOWN = """\
**VQA accuracy by question type**

| question type | toklip (val) | toklip (held-out pairs) | vq (val) |
|---|---:|---:|---:|
| color | 0.91 | 0.25 | 0.50 |
| shape | 0.88 | 0.50 | 0.62 |
| count | 0.80 | 0.75 | 0.70 |
| existence | 0.73 | 0.50 | 0.55 |
| position | 0.62 | 0.50 | 0.50 |
| size | 0.99 | 0.50 | 0.76 |
| overall | 0.85 | 0.50 | 0.60 |

**ShapesEval of generated images by attribute**

| attribute | toklip (val) | toklip (held-out pairs) | vq (val) |
|---|---:|---:|---:|
| color | 0.96 | 0.50 | 0.90 |
| shape | 0.95 | 0.50 | 0.85 |
| size | 0.90 | 0.75 | 0.80 |
| position | 0.99 | 1.00 | 0.95 |
| count | 0.98 | 1.00 | 0.90 |
| exact | 0.78 | 0.25 | 0.56 |
| CFG scale | 1.00 | 1.00 | 3.00 |
"""


def _png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[2:6, 2:6] = color
    Image.fromarray(img).save(path)


def _jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _losses(steps: int, with_parts: bool) -> list[dict]:
    out = []
    for step in range(1, steps + 1):
        rec = {"step": step, "loss": 3.0 / step, "lr": 1e-3, "grad_norm": 1.0}
        if with_parts:
            rec.update(text_loss=1.0 / step, image_loss=2.0 / step)
        out.append(rec)
    return out


def _make_out(root: Path, metrics: dict = METRICS, runs: tuple[str, ...] = ("toklip", "vq"),
              recon: bool = True) -> Path:
    out = root / "OUT"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _jsonl(out / "world" / "t2i_prompts_val.jsonl",
           [{"index": i, "prompt": p, "spec": {"objects": []}} for i, p in enumerate(PROMPTS)])
    for name in runs:
        t2i = out / "runs" / name / "eval_t2i"
        for i in range(len(PROMPTS)):
            _png(t2i / "images" / f"{i:04d}.png", (255, 0, 0) if name == "toklip" else (0, 0, 255))
        # eval-t2i records the prompts path as given to it: here relative to OUT
        (t2i / "metrics.json").write_text(json.dumps({"prompts": "world/t2i_prompts_val.jsonl"}))
        for stage, spec in metrics["runs"][name].get("train", {}).items():
            _jsonl(out / spec["metrics_jsonl"], _losses(spec["steps"], with_parts=stage == "unified"))
    if recon:
        for i in range(3):
            _png(out / "recon" / "originals" / f"{i:04d}.png", (0, 255, 0))
            _png(out / "recon" / f"{i:04d}.png", (0, 200, 0))
    return out


def _is_png(path: Path) -> bool:
    if path.read_bytes()[:8] != PNG_MAGIC:
        return False
    with Image.open(path) as im:
        im.verify()
    return True


def test_markdown_tables_exact_text():
    assert markdown_tables(copy.deepcopy(METRICS)) == EXPECTED_MARKDOWN


def test_markdown_tables_single_run_without_t2i():
    metrics = copy.deepcopy(METRICS)
    del metrics["runs"]["vq"]
    for section in ("t2i", "vqa_test", "t2i_test"):
        del metrics["runs"]["toklip"][section]
    text = markdown_tables(metrics)
    assert "| question type | toklip (val) |\n|---|---:|\n| color | 0.91 |" in text
    assert "ShapesEval" not in text


def test_write_report_page_and_figures(tmp_path):
    out = _make_out(tmp_path)
    page_path = write_report(out)
    assert page_path == out / "report.html"
    page = page_path.read_text()
    for number in ("0.85", "0.73", "0.56", "31.46", "0.81", "0.69", "1234.5", "12.2", "500.0", "1.2500", "0.97", "1.06"):
        assert f"<td>{number}</td>" in page, number
    for rel in ("figures/grid_toklip.png", "figures/grid_vq.png", "figures/recon.png",
                "figures/loss_toklip.png", "figures/loss_vq.png",
                "runs/toklip/eval_t2i/images/0000.png", "runs/vq/eval_t2i/images/0003.png"):
        assert f'src="{rel}"' in page, rel
        assert _is_png(out / rel), rel
    assert f"<figcaption>{PROMPTS[0]}</figcaption>" in page
    assert "unified-ar demo --out OUT --seed 0" in page
    assert '&quot;hidden_size&quot;: 128' in page  # the resolved config, pretty JSON escaped in <pre>
    assert "<script" not in page
    with Image.open(out / "figures" / "loss_toklip.png") as im:  # two stages side by side
        assert im.width > im.height


def test_write_report_omits_missing_parts(tmp_path):
    metrics = copy.deepcopy(METRICS)
    del metrics["runs"]["vq"]
    del metrics["tokenizers"]
    del metrics["runs"]["toklip"]["interleaved"]
    out = _make_out(tmp_path, metrics, runs=("toklip",), recon=False)
    page = write_report(out, ReportOptions(grid_images=2, page_images=3)).read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["grid_toklip.png", "loss_toklip.png"]
    assert "Tokenizers" not in page and "Interleaved" not in page and "<th>vq</th>" not in page
    assert page.count('class="cell"') == 3


def test_prompts_from_eval_t2i_metrics_absolute_path(tmp_path):
    out = _make_out(tmp_path)
    other = tmp_path / "elsewhere.jsonl"
    _jsonl(other, [{"index": i, "prompt": f"custom prompt {i}"} for i in range(4)])
    (out / "runs" / "vq" / "eval_t2i" / "metrics.json").write_text(json.dumps({"prompts": str(other)}))
    page = write_report(out).read_text()
    assert "<figcaption>custom prompt 2</figcaption>" in page
    assert f"<figcaption>{PROMPTS[2]}</figcaption>" in page  # the toklip run keeps the world's prompts


@pytest.mark.parametrize("edit, key", [
    (lambda m: m["runs"]["vq"]["vqa"].pop("overall"), "runs.vq.vqa: missing required key(s) overall"),
    (lambda m: m["runs"]["toklip"]["t2i"].update(exact="high"), "runs.toklip.t2i.exact: expected float"),
    (lambda m: m["runs"]["toklip"]["t2i"].pop("cfg_scale"), "runs.toklip.t2i: missing required key(s) cfg_scale"),
    (lambda m: m["tokenizers"]["vq"]["recon_shapes_eval"].pop("exact"),
     "tokenizers.vq.recon_shapes_eval: missing required key(s) exact"),
    (lambda m: m["runs"]["toklip"]["train"]["align"].pop("metrics_jsonl"),
     "runs.toklip.train.align: missing required key(s) metrics_jsonl"),
    (lambda m: m.pop("stage_seconds"), "missing required key(s) stage_seconds"),
    (lambda m: m.update(extra=1), "extra: unknown key"),
    (lambda m: m["runs"]["vq"].update(vqa=[0.5]), "runs.vq.vqa: expected a mapping"),
])
def test_malformed_metrics_names_file_and_key(tmp_path, edit, key):
    metrics = copy.deepcopy(METRICS)
    edit(metrics)
    out = _make_out(tmp_path, METRICS)
    (out / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ReportError) as err:
        write_report(out)
    assert str(out / "metrics.json") in str(err.value)
    assert key in str(err.value)
    assert not (out / "report.html").exists()


def test_invalid_json_and_missing_file(tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        load_metrics(out)
    (out / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"metrics\.json: not valid JSON"):
        load_metrics(out)


def test_loss_log_reading_and_errors(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _jsonl(path, _losses(3, with_parts=False) + [{"step": 4, "loss": 0.5, "text_loss": 0.1}])
    log = read_loss_log(path)
    assert log["step"].tolist() == [1, 2, 3, 4] and log["loss"][-1] == 0.5
    assert "text_loss" not in log  # logged on one step only: not a curve
    path.write_text(path.read_text() + '{"step": 5}\n')
    with pytest.raises(ReportError, match=r"metrics\.jsonl:5: record needs a number 'loss'"):
        read_loss_log(path)


def test_cli_main_markdown(tmp_path, capsys):
    out = _make_out(tmp_path)
    assert main([str(out), "--markdown"]) == 0
    assert capsys.readouterr().out == EXPECTED_MARKDOWN + "\n"
    assert not (out / "report.html").exists()  # --markdown only prints the tables
    assert main([str(out)]) == 0
    assert (out / "report.html").is_file()
    (out / "metrics.json").write_text(json.dumps({"runs": {}}))
    assert main([str(out)]) == 2
    assert "missing required key(s) command" in capsys.readouterr().err


def test_registered_in_cli():
    from unified_ar.cli import COMMANDS

    assert COMMANDS["report"][0] == "unified_ar.eval.report"
