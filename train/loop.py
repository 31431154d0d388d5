"""The generic training loop: ``train(model, data, train_config, run_dir)``.

Works for any model whose ``forward(batch: dict)`` returns an object with ``.loss``
(VQ, TokLIP, the unified model). ``data`` is a :class:`Batches`: micro-batches
as a pure function of (seed, position, rank), so ``resume=True`` continues the
exact data order from the position stored in the checkpoint.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from unified_ar.config import save_config, to_dict
from unified_ar.train import checkpoint, wandb_log
from unified_ar.train.config import TrainConfig
from unified_ar.train.engine import Engine, build_engine
from unified_ar.train.logging_utils import MetricsLog, Reporter


class Batches(Protocol):
    """Micro-batches for one rank, from a position on.

    ``iter_from(position, rank, world_size)`` yields ``(next_position, batch)``
    forever (epoch after epoch); ``next_position`` is what to pass to resume
    right after ``batch``. Optional: a ``counters -> dict[str, int]`` property (bad
    records, truncations), logged and checkpointed, and ``load_counters(saved)`` to
    restore them on resume."""

    def iter_from(self, position: int, rank: int, world_size: int) -> Iterator[tuple[int, dict]]: ...


class TrainingStopped(RuntimeError):
    """The run stopped early (too many non-finite losses in a row); a checkpoint was written."""


@dataclass
class TrainResult:
    """Summary of a finished run. ``losses`` holds the mean loss of each step this process ran."""

    run_dir: Path
    steps: int
    rank: int = 0
    losses: list[float] = field(default_factory=list)
    nonfinite_skipped: int = 0
    tokens_per_s: float = 0.0
    export_dir: Path | None = None


@dataclass
class _Window:
    """Sums over the micro-batches of one optimiser step."""

    loss: float = 0.0
    count: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    real_tokens: int = 0
    total_tokens: int = 0

    def add(self, loss: float, metrics: dict[str, float], batch: dict) -> None:
        self.loss += loss
        self.count += 1
        for name, value in metrics.items():
            self.metrics[name] = self.metrics.get(name, 0.0) + value
        real, total = batch_tokens(batch)
        self.real_tokens += real
        self.total_tokens += total


def batch_tokens(batch: dict) -> tuple[int, int]:
    """(non-padding tokens, all token slots) of a batch: from ``attention_mask [B,L]`` when
    present, else ``input_ids [B,L]``, else ``(0, 0)`` (e.g. pixel batches)."""
    if "attention_mask" in batch:
        mask = batch["attention_mask"]
        return int(mask.sum()), mask.numel()
    if "input_ids" in batch:
        return batch["input_ids"].numel(), batch["input_ids"].numel()
    return 0, 0


def train(model: nn.Module, data: Batches, config: TrainConfig, run_dir: str | Path, *,
          resume: bool = False, full_config: Any | None = None) -> TrainResult:
    """Train ``model`` for ``config.max_steps`` optimiser steps; write everything under ``run_dir``.

    ``full_config`` (default ``config``) is the resolved config saved to ``run_dir/config.yaml``
    and into every checkpoint. Raises :class:`TrainingStopped` after
    ``config.max_nonfinite_in_a_row`` non-finite losses in a row (having saved a checkpoint)."""
    run_dir = Path(run_dir)
    full_config = config if full_config is None else full_config
    engine = build_engine(model, config)
    state = {"position": 0, "nonfinite_skipped": 0, "counters": {}}
    metrics_log = MetricsLog(run_dir, enabled=engine.is_main)
    if not resume and checkpoint.latest_tag(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds a checkpoint; resume it (--resume) or use a new run_dir")
    if resume:
        restored = checkpoint.load(engine, run_dir)
        if restored is not None:
            state.update({k: restored[k] for k in state if k in restored})
            if hasattr(data, "load_counters"):
                data.load_counters(state["counters"])
            metrics_log.truncate_after(engine.global_step)
    if engine.is_main:
        save_config(full_config, run_dir)
    reporter = Reporter(config, run_dir, engine.global_step, engine.is_main)
    if resume:
        reporter.message(f"resumed from step {engine.global_step} (data position {state['position']})"
                         if engine.global_step else f"{run_dir}: no checkpoint to resume; starting at step 0")
    wandb_run = wandb_log.start(config, run_dir, to_dict(full_config), resume=resume, is_main=engine.is_main)
    finished = False
    try:
        result = _run(engine, data, config, run_dir, state, metrics_log, reporter, full_config, wandb_run)
        wandb_log.end_of_stage(engine, wandb_run, config, full_config, result, reporter.message)
        finished = True
    finally:
        reporter.close()
        metrics_log.close()
        if wandb_run is not None:
            wandb_run.finish(failed=not finished)
    return result


def _run(engine: Engine, data: Batches, config: TrainConfig, run_dir: Path, state: dict,
         metrics_log: MetricsLog, reporter: Reporter, full_config: Any,
         wandb_run: wandb_log.WandbRun | None) -> TrainResult:
    result = TrainResult(run_dir=run_dir, steps=engine.global_step, rank=engine.rank)
    batches = data.iter_from(state["position"], engine.rank, engine.world_size)
    saved_at = engine.global_step if state["position"] else -1
    started, tokens_seen = time.perf_counter(), 0
    while engine.global_step < config.max_steps:
        window, step_start = _Window(), time.perf_counter()
        in_a_row, stepped = 0, False
        for position, batch in batches:
            micro = engine.micro_step(batch)
            state["position"] = position
            if not micro.finite:
                in_a_row += 1
                state["nonfinite_skipped"] += 1
                reporter.message(f"step {engine.global_step}: non-finite loss, micro-batch skipped "
                                 f"({in_a_row} in a row, {state['nonfinite_skipped']} in total)")
                if in_a_row >= config.max_nonfinite_in_a_row:
                    _stop_nonfinite(engine, run_dir, state, data, full_config, in_a_row)
                continue
            in_a_row = 0
            window.add(micro.loss, micro.metrics, batch)
            if micro.stepped:
                stepped = True
                break
        if not stepped:
            raise RuntimeError(f"{type(data).__name__}.iter_from stopped yielding at data position "
                               f"{state['position']}; a Batches must yield forever (epoch after epoch)")
        elapsed = time.perf_counter() - step_start
        tokens_seen += window.real_tokens
        record = _record(engine, window, elapsed, data)
        result.losses.append(record["loss"])
        metrics_log.write(record)
        reporter.advance(1)
        if engine.global_step % config.log_every == 0 or engine.global_step == config.max_steps:
            reporter.show(record)
            if wandb_run is not None:
                wandb_run.log(record)
        if config.save_every and engine.global_step % config.save_every == 0:
            checkpoint.save(engine, run_dir, _client_state(state, data), full_config)
            saved_at = engine.global_step
    if saved_at != engine.global_step:
        checkpoint.save(engine, run_dir, _client_state(state, data), full_config)
    result.steps = engine.global_step
    result.nonfinite_skipped = state["nonfinite_skipped"]
    result.tokens_per_s = tokens_seen * engine.world_size / max(time.perf_counter() - started, 1e-9)
    if config.export_final:
        result.export_dir = engine.export(run_dir / "export")
    return result


def _record(engine: Engine, window: _Window, elapsed: float, data: Batches) -> dict[str, Any]:
    n = max(window.count, 1)
    record: dict[str, Any] = {"step": engine.global_step, "loss": window.loss / n, "lr": engine.lr,
                              "grad_norm": engine.grad_norm()}
    record.update({name: value / n for name, value in window.metrics.items()})
    if window.total_tokens:
        # Per rank; ranks run in lockstep, so the global rate is world_size times this.
        record["tokens_per_s"] = window.real_tokens * engine.world_size / max(elapsed, 1e-9)
        record["padding"] = 1.0 - window.real_tokens / window.total_tokens
    record.update(getattr(data, "counters", None) or {})
    if record["grad_norm"] is not None and not math.isfinite(record["grad_norm"]):
        record["grad_norm"] = str(record["grad_norm"])  # JSON has no inf / nan
    return record


def _client_state(state: dict, data: Batches) -> dict:
    counters = dict(getattr(data, "counters", None) or {})
    return {"position": state["position"], "nonfinite_skipped": state["nonfinite_skipped"], "counters": counters}


def _stop_nonfinite(engine: Engine, run_dir: Path, state: dict, data: Batches, full_config: Any,
                    in_a_row: int) -> None:
    path = checkpoint.save(engine, run_dir, _client_state(state, data), full_config)
    raise TrainingStopped(
        f"{in_a_row} non-finite losses in a row at step {engine.global_step} (data position "
        f"{state['position']}); stopped, checkpoint at {path}. Lower train.lr, check the data, "
        "or raise train.max_nonfinite_in_a_row.")

