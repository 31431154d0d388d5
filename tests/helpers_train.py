"""A tiny causal LM with the training contract (forward(batch) -> .loss, save/from_pretrained),
and a synthetic token dataset, for the train/ tests."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F


@dataclass
class TinyOutput:
    loss: torch.Tensor
    metrics: dict


class TinyLM(nn.Module):
    """Embedding -> 2 residual MLP blocks over a causal running mean -> head. Shapes: ids [B,L]."""

    def __init__(self, vocab: int = 32, hidden: int = 32):
        super().__init__()
        self.config = {"vocab": vocab, "hidden": hidden}
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
                                    for _ in range(2))
        self.head = nn.Linear(hidden, vocab)

    def forward(self, batch: dict) -> TinyOutput:
        x = self.embed(batch["input_ids"])
        steps = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        x = x + x.cumsum(1) / steps
        for block in self.blocks:
            x = x + block(x)
        logits = self.head(x)[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        if batch.get("poison") is not None and bool(batch["poison"].any()):
            loss = loss * float("nan")
        return TinyOutput(loss=loss, metrics={"token_loss": loss.detach()})

    def save_pretrained(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.config))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")

    @classmethod
    def from_pretrained(cls, directory) -> "TinyLM":
        directory = Path(directory)
        model = cls(**json.loads((directory / "config.json").read_text()))
        model.load_state_dict(load_file(directory / "model.safetensors"), strict=True)
        return model


class PatternData:
    """Sequences following ``x[t+1] = (x[t] * 3 + 1) % vocab``: learnable in a few steps."""

    def __init__(self, size: int = 64, length: int = 12, vocab: int = 32, poison: set[int] | None = None):
        self.size, self.length, self.vocab = size, length, vocab
        self.poison = poison or set()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        ids = [index % self.vocab]
        for _ in range(self.length - 1):
            ids.append((ids[-1] * 3 + 1) % self.vocab)
        return {"ids": ids, "poison": index in self.poison}


def collate_pattern(records: list[dict], key: int = 0) -> dict:
    ids = torch.tensor([r["ids"] for r in records])
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids),
            "poison": torch.tensor([r["poison"] for r in records])}


def save_tiny_vq(directory: Path) -> Path:
    """The tests' tiny VQ (16 px -> 4x4 codes of 32), saved for from_pretrained / pretokenize."""
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel, preset_config
    from unified_helpers import TINY_VQ

    torch.manual_seed(0)
    return VQModel(preset_config(VQ_PRESETS, "VQ-shapes", **TINY_VQ)).save_pretrained(directory)


def pretokenize_world(world: Path, vq_dir: Path, out: Path) -> Path:
    from unified_ar.train.pretokenize import main

    files = [str(world / "captions_train.jsonl"), str(world / "conversations_train.json")]
    if main([*files, "--vq", str(vq_dir), "--out", str(out), "--image-size", "16", "--shard-size", "40"]) != 0:
        raise RuntimeError("pretokenize failed")
    return out


def stage_config(world: Path, vq_dir: Path, codes: Path, run_dir: Path, *, model: dict | None = None,
                 collate: dict | None = None, **train) -> dict:
    """A stage config (as a dict) training the tiny unified model on the Shapes world; ``model`` and
    ``collate`` update those sections, ``train`` the train section."""
    config = {
        "stage": "unified",
        "run_dir": str(run_dir),
        "model": {"llm": {"preset": "test", "attn_implementation": "sdpa"},
                  "vq": {"preset": None, "path": str(vq_dir)},
                  "tokenizer": str(world / "tokenizer"), "image_size": 16, "comprehension_features": "vq"},
        "data": {"sources": [{"kind": "captions", "path": str(world / "captions_train.jsonl"), "weight": 0.5},
                             {"kind": "conversations", "path": str(world / "conversations_train.json"),
                              "weight": 0.5}],
                 "codes": str(codes)},
        "collate": {"max_length": 128, "caption_dropout": 0.1, "pack": True},
        "train": {"max_steps": 8, "micro_batch_size": 2, "lr": 1.0e-2, "warmup_steps": 1, "log_every": 1,
                  "progress_bar": False, **train},
    }
    config["model"].update(model or {})
    config["collate"].update(collate or {})
    return config


def tiny_toklip() -> dict:
    """``model.toklip`` for the tiny VQ (semantic_gen_input, comprehension_features toklip)."""
    from unified_helpers import TINY_VQ

    return {"preset": "TokLIP-shapes",
            "overrides": {"vq_cfg": TINY_VQ, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2}}


def launcher_env() -> dict:
    """The environment of a launched run: one intra-op thread per rank, no inherited rank variables."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_stage(config: Path, *extra: str, nproc: int = 2) -> list[str]:
    """The command running ``unified-ar train --config CONFIG`` on ``nproc`` ranks under torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(_free_port()), "-m", "unified_ar.train.stage_unified",
            "--config", str(config), *extra]


def start_group(command: list[str], **kwargs) -> subprocess.Popen:
    """Start ``command`` (a launcher) in a session of its own, with :func:`launcher_env`."""
    return subprocess.Popen(command, env=launcher_env(), start_new_session=True, **kwargs)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it, at once, and reap them. torchrun starts each
    rank in a session of its own, so a SIGKILL of the launcher's process group alone would leave the
    ranks running (training on, writing checkpoints, or hung in a collective)."""
    import psutil

    try:
        launcher = psutil.Process(proc.pid)
        tree = [launcher, *launcher.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []  # already exited
    for process in tree:  # the launcher first: it cannot start anything once it is gone
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


def run_group(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``command`` to the end; on a timeout (a hang: a collective mismatch) kill its whole group,
    not only the launcher, so that no rank is left behind, and return code -9 with the output so far."""
    proc = start_group(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout} s: a hang)"
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
