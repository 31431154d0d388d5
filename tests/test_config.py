"""Typed configs: unknown keys and wrong types name the key and the file."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from unified_ar.config import ConfigError, load_config, parse_overrides, save_config


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    flags: list[int] = field(default_factory=lambda: [1, 2])
    mode: str | None = None


@dataclass
class Outer:
    train: Inner = field(default_factory=Inner)
    seed: int = 0


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "train:\n  lr: 3e-4\n  steps: 5\nseed: 1\n")
    cfg = load_config(Outer, path, ["--train.steps", "7", "--train.flags=[3]", "--train.mode", "fast"])
    assert cfg.train.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string; float fields accept it
    assert cfg.train.steps == 7 and cfg.train.flags == [3] and cfg.train.mode == "fast" and cfg.seed == 1


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path)
    assert "train.lrr" in str(e.value) and str(path) in str(e.value)


def test_wrong_type_names_key(tmp_path):
    path = write(tmp_path, "train:\n  steps: ten\n")
    with pytest.raises(ConfigError, match=r"train\.steps: expected int, got 'ten'"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match=r"train\.lr: expected float"):
        load_config(Outer, None, ["--train.lr", "fast"])
    with pytest.raises(ConfigError, match=r"seed: expected int, got True"):
        load_config(Outer, None, ["--seed", "true"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    path = write(tmp_path, "train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Outer, path)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="missing value"):
        parse_overrides(["--train.lr"])
    with pytest.raises(ConfigError, match="expected --section.key VALUE"):
        parse_overrides(["train.lr", "1"])


def test_save_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["--train.name", "run"])
    path = save_config(cfg, tmp_path)
    assert load_config(Outer, path) == cfg


def test_cli_bad_key_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "jittr: 2\n")
    proc = subprocess.run([sys.executable, "-m", "unified_ar.cli", "world", "--out", str(tmp_path / "w"),
                           "--config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "jittr" in lines[0] and str(path) in lines[0], proc.stderr
    assert not (tmp_path / "w").exists()
