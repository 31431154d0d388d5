"""wandb (``train.report_to: wandb``), offline: a tiny unified stage logs its metrics, summary and
sample images; ``--resume`` continues the same wandb run; evaluation figures join it later; with
wandb off nothing imports it, and with wandb missing the run stops with one line."""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers_train import launcher_env, pretokenize_world, save_tiny_vq, stage_config

wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'wandb>=0.18')")

_BLOCK = 32768  # wandb's transaction log: LevelDB log blocks


def _records(path: Path):
    """The protobuf records of an offline run's ``run-ID.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), path
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _run_records(run: Path, timeout: float = 60.0) -> list:
    """The records of an offline run folder, once its ``exit`` record is there (wandb's service
    may still be writing the file when ``finish`` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(_records(next(run.glob("run-*.wandb"))))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _offline_runs(wandb_dir: Path) -> list[Path]:
    return sorted((wandb_dir / "wandb").glob("offline-run-*"))


def _is_run(folder: Path, run_id: str) -> bool:
    """wandb names an offline run ``offline-run-{time}-{id}``, with ``-1``, ``-2``... appended when
    two runs of one id start within the same second."""
    return re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", folder.name) is not None


def _history(run: Path) -> dict[int, dict]:
    """step -> {key: value} of an offline run's logged history."""
    steps: dict[int, dict] = {}
    for record in _run_records(run):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            steps.setdefault(row["_step"], {}).update(row)
    return steps


def _summary(run: Path) -> dict:
    summary = {}
    for record in _run_records(run):
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
    return summary


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "wandb_home"
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(folder), "WANDB_CONFIG_DIR": str(folder / "config"),
                        "WANDB_CACHE_DIR": str(folder / "cache"), "WANDB_DATA_DIR": str(folder / "data"),
                        "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    return folder


@pytest.mark.slow
def test_stage_logs_metrics_samples_and_resumes_the_same_run(shapes_world, tmp_path, offline, monkeypatch):
    import torch._dynamo

    from unified_ar.cli import main
    from unified_ar.train.config import TrainConfig
    from unified_ar.train.wandb_log import RUN_ID_FILE, log_figures

    monkeypatch.setattr(torch._dynamo.config, "disable", True)  # the samples' decode step, eager: no compile time
    vq_dir = save_tiny_vq(tmp_path / "vq")
    codes = pretokenize_world(shapes_world, vq_dir, tmp_path / "codes")
    run_dir = tmp_path / "run"
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(stage_config(shapes_world, vq_dir, codes, run_dir, max_steps=4, save_every=2,
                                                  report_to="wandb", wandb_samples=2)))
    assert main(["train", "--config", str(config)]) == 0
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    [first] = _offline_runs(offline)
    assert _is_run(first, run_id)
    history = _history(first)
    assert sorted(history) == [1, 2, 3, 4]
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [history[s]["loss"] for s in range(1, 5)] == pytest.approx(losses)
    assert {"text_loss", "image_loss", "lr", "grad_norm"} <= set(history[4])
    captions = [json.loads(line)["caption"] for line in (shapes_world / "captions_train.jsonl").read_text().splitlines()]
    assert history[4]["samples/count"] == 2 and history[4]["samples/captions"] == captions[:2]
    images = sorted((first / "files" / "media" / "images").glob("samples_*.png"))
    assert len(images) == 2 and history[4]["samples/width"] == history[4]["samples/height"] == 16
    assert _summary(first)["final_loss"] == pytest.approx(sum(losses) / len(losses))

    # --resume continues the same wandb run from the step-4 checkpoint
    assert main(["train", "--config", str(config), "--resume", "--train.max_steps", "6",
                 "--train.wandb_prompts", '["a red circle"]']) == 0
    assert (run_dir / RUN_ID_FILE).read_text().strip() == run_id
    second = [r for r in _offline_runs(offline) if r != first]
    assert len(second) == 1 and _is_run(second[0], run_id)
    resumed = _history(second[0])
    assert sorted(resumed) == [5, 6] and resumed[6]["samples/captions"] == ["a red circle"]

    # evaluation figures computed after the stage join the same run's summary
    assert log_figures(TrainConfig(report_to="wandb"), run_dir, {"vqa/overall": 0.5})
    third = [r for r in _offline_runs(offline) if r not in (first, second[0])]
    assert len(third) == 1 and _is_run(third[0], run_id)
    assert _summary(third[0])["vqa/overall"] == 0.5


def test_only_rank_0_starts_wandb(tmp_path, offline):
    from unified_ar.train.config import TrainConfig
    from unified_ar.train.wandb_log import RUN_ID_FILE, start

    config = TrainConfig(report_to="wandb")
    assert start(config, tmp_path / "run", {}, resume=False, is_main=False) is None
    assert not (tmp_path / "run" / RUN_ID_FILE).exists() and not offline.exists()
    assert start(TrainConfig(), tmp_path / "run", {}, resume=False, is_main=True) is None


def test_a_bad_stored_run_id_is_named(tmp_path):
    from unified_ar.config import ConfigError
    from unified_ar.train.wandb_log import RUN_ID_FILE, stored_run_id

    (tmp_path / RUN_ID_FILE).write_text("no spaces/allowed\n")
    with pytest.raises(ConfigError, match=f"{RUN_ID_FILE}: not a wandb run id"):
        stored_run_id(tmp_path)


_OFF_THEN_MISSING = """
import sys
sys.path.insert(0, {tests!r})
from helpers_train import PatternData, TinyLM, collate_pattern
from unified_ar.config import ConfigError
from unified_ar.train.config import TrainConfig
from unified_ar.train.data.sampler import MapBatches
from unified_ar.train.loop import train

def run(name, report_to):
    config = TrainConfig(max_steps=2, micro_batch_size=4, progress_bar=False, export_final=False, report_to=report_to)
    data = MapBatches(PatternData(size=16), collate_pattern, 4, 0)
    return train(TinyLM(), data, config, {tmp!r} + "/" + name)

run("off", "none")
print("imported after off:", "wandb" in sys.modules)
sys.modules["wandb"] = None  # as if not installed
try:
    run("missing", "wandb")
except ConfigError as error:
    print("error:", error)
"""


def test_wandb_off_imports_nothing_and_missing_is_one_line(tmp_path):
    script = _OFF_THEN_MISSING.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          env=launcher_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported after off: False" in proc.stdout
    assert "error: train.report_to wandb: the wandb package is not installed (pip install 'wandb>=0.18')" in proc.stdout
    assert not (tmp_path / "missing" / "checkpoints").exists()
