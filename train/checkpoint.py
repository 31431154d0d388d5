"""Checkpoints under ``run_dir/checkpoints``: written atomically, resumed exactly.

Layout::

    run_dir/checkpoints/step_00000100/   DeepSpeed files + rng_rank{r}.pt + config.yaml
    run_dir/checkpoints/latest           the tag of the newest *complete* checkpoint

A checkpoint is complete only when every rank has written its part; ``latest``
is replaced (write to a temporary file, fsync, ``os.replace``) after a barrier,
so a run killed mid-write resumes from the previous checkpoint. DeepSpeed's own
``load_checkpoint`` reads the same ``latest`` file format (the tag as text).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from unified_ar.config import save_config
from unified_ar.files import write_atomic
from unified_ar.train.engine import Engine

CHECKPOINTS = "checkpoints"
LATEST = "latest"
_TAG = re.compile(r"^step_(\d{8})$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def latest_tag(run_dir: str | Path) -> str | None:
    """The tag ``latest`` points to, or None when the run has no complete checkpoint."""
    pointer = checkpoint_dir(run_dir) / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not _TAG.match(tag) or not (pointer.parent / tag).is_dir():
        raise FileNotFoundError(f"{pointer}: points to {tag!r}, which is not a checkpoint directory")
    return tag


def save(engine: Engine, run_dir: str | Path, client_state: dict, config: Any | None = None) -> Path:
    """Write a checkpoint of ``engine`` at its current step (collective: every rank calls it)."""
    root = checkpoint_dir(run_dir)
    tag = tag_for(engine.global_step)
    engine.save_checkpoint(root, tag, client_state)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, root / tag / f"rng_rank{engine.rank}.pt")
    engine.barrier()
    if engine.is_main:
        if config is not None:
            save_config(config, root / tag)
        write_atomic(root / LATEST, tag)
        _prune(root, keep=engine.config.keep_checkpoints, latest=tag)
    engine.barrier()
    return root / tag


def _prune(root: Path, keep: int, latest: str) -> None:
    """Keep the newest ``keep`` complete checkpoints; drop older ones and leftovers of killed writes."""
    tags = sorted(p.name for p in root.iterdir() if p.is_dir() and _TAG.match(p.name))
    complete = [t for t in tags if t <= latest]
    for tag in complete[:-keep] + [t for t in tags if t > latest]:
        shutil.rmtree(root / tag)


def load(engine: Engine, run_dir: str | Path) -> dict | None:
    """Restore the newest complete checkpoint into ``engine``; its client state, or None if none."""
    tag = latest_tag(run_dir)
    if tag is None:
        return None
    root = checkpoint_dir(run_dir)
    client_state = engine.load_checkpoint(root, tag)
    rng_path = root / tag / f"rng_rank{engine.rank}.pt"
    if not rng_path.is_file():
        raise FileNotFoundError(f"{rng_path}: missing; checkpoint {tag} was written by fewer ranks "
                                f"than the {engine.world_size} resuming it")
    rng = torch.load(rng_path, weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return client_state
