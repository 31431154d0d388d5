"""wandb for a training run, when ``train.report_to: wandb`` asks for it; only rank 0 logs.

- Metrics: the loop's record of every log step (each ``log_every`` steps and the last).
- The run id is kept in ``run_dir/wandb_run_id``: ``--resume`` continues the same wandb run.
- End of a stage: the summary gets ``final_loss`` (mean loss of the run's last
  :data:`FINAL_LOSS_STEPS` steps in ``metrics.jsonl``), ``steps``, ``tokens_per_s`` and
  ``nonfinite_skipped``; a unified model draws ``train.wandb_samples`` images, logged as
  ``samples`` (one ``wandb.Image`` per prompt, captioned with it).
- :func:`log_figures`: evaluation figures computed after the stage (VQA, ShapesEval) go into the
  same run's summary.

wandb runs offline unless ``train.wandb_mode: online`` (or the environment's ``WANDB_MODE``), in
``run_dir/wandb`` unless ``WANDB_DIR`` is set, so nothing leaves the machine by default. The
``wandb`` package is imported only here, and only when a run reports to it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable

from torch import nn

from unified_ar.config import ConfigError
from unified_ar.files import write_atomic
from unified_ar.train.config import TrainConfig
from unified_ar.train.logging_utils import METRICS_FILE

RUN_ID_FILE = "wandb_run_id"
FINAL_LOSS_STEPS = 20
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError("train.report_to wandb: the wandb package is not installed "
                          "(pip install 'wandb>=0.18')") from None
    return wandb


def stored_run_id(run_dir: str | Path) -> str | None:
    """The wandb run id kept in ``run_dir/wandb_run_id``, or None when there is none."""
    path = Path(run_dir) / RUN_ID_FILE
    if not path.is_file():
        return None
    run_id = path.read_text().strip()
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"{path}: not a wandb run id ({run_id!r}); delete the file to start a new wandb run")
    return run_id


def _run_id(run_dir: Path, resume: bool) -> str:
    """The stored id when resuming a run that has one; otherwise a new id, stored first."""
    stored = stored_run_id(run_dir) if resume else None
    if stored is not None:
        return stored
    run_id = secrets.token_hex(8)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / RUN_ID_FILE, run_id + "\n")
    return run_id


def _init(wandb, config: TrainConfig, run_dir: Path, run_id: str, full_config: dict | None):
    folder = Path(os.environ.get("WANDB_DIR") or run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=config.wandb_project, dir=str(folder), id=run_id, resume="allow",
                      name=run_dir.name, config=full_config,
                      mode=os.environ.get("WANDB_MODE") or config.wandb_mode)


class WandbRun:
    """The wandb run of one training run (rank 0's)."""

    def __init__(self, run: Any, wandb: Any):
        self.run = run
        self._wandb = wandb

    @property
    def id(self) -> str:
        return self.run.id

    def log(self, record: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def summarize(self, figures: dict[str, Any]) -> None:
        self.run.summary.update(figures)

    def log_images(self, key: str, images: list, captions: list[str], step: int) -> None:
        self.run.log({key: [self._wandb.Image(image, caption=caption)
                            for image, caption in zip(images, captions)]}, step=step)

    def finish(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def start(config: TrainConfig, run_dir: str | Path, full_config: dict | None, *, resume: bool,
          is_main: bool) -> WandbRun | None:
    """rank 0's :class:`WandbRun` when ``config.report_to`` is ``wandb``, else None (wandb not imported).

    ``resume``: continue the wandb run whose id ``run_dir/wandb_run_id`` holds (a new one without it)."""
    if config.report_to != "wandb" or not is_main:
        return None
    wandb = _import_wandb()
    run_dir = Path(run_dir)
    return WandbRun(_init(wandb, config, run_dir, _run_id(run_dir, resume), full_config), wandb)


def log_figures(config: TrainConfig, run_dir: str | Path, figures: dict[str, Any]) -> bool:
    """Add evaluation ``figures`` (e.g. ``{"vqa/overall": 0.81}``) to the summary of the wandb run
    kept in ``run_dir``; False (and wandb not imported) when ``config.report_to`` is not wandb."""
    if config.report_to != "wandb":
        return False
    run_id = stored_run_id(run_dir)
    if run_id is None:
        raise FileNotFoundError(f"{Path(run_dir) / RUN_ID_FILE}: missing; the run was not trained with "
                                "train.report_to wandb")
    wandb = _import_wandb()
    run = WandbRun(_init(wandb, config, Path(run_dir), run_id, None), wandb)
    run.summarize(figures)
    run.finish()
    return True


def sample_prompts(config: TrainConfig, full_config: Any) -> list[str]:
    """The first ``config.wandb_samples`` of ``config.wandb_prompts``, or, when that list is empty,
    of the captions of the stage's first ``captions`` data source (``full_config.data.sources``)."""
    if config.wandb_samples == 0:
        return []
    if config.wandb_prompts:
        return config.wandb_prompts[:config.wandb_samples]
    from unified_ar.train.data.sources import load_rows

    sources = getattr(getattr(full_config, "data", None), "sources", None) or []
    captions = [s for s in sources if s.kind == "captions"]
    if not captions:
        return []
    prompts = []
    for row in load_rows(captions[0].path, streaming=True):
        caption = row.get("caption")
        if isinstance(caption, str) and caption.strip():
            prompts.append(caption)
        if len(prompts) == config.wandb_samples:
            break
    return prompts


def _draws_samples(engine, config: TrainConfig) -> bool:
    """Whether this rank draws the stage's samples: rank 0, or every rank at ZeRO-3 (each forward
    gathers the partitioned weights layer by layer: a collective every rank runs)."""
    if config.report_to != "wandb" or config.wandb_samples == 0:
        return False
    from unified_ar.modeling import UnifiedARModel

    return isinstance(engine.module, UnifiedARModel) and (engine.is_main or config.zero_stage == 3)


def draw_samples(model: nn.Module, prompts: list[str], seed: int, **settings) -> list:
    """PIL images the model draws for ``prompts`` (seeds ``seed + i``) with its own sampling settings
    (``settings`` on top)."""
    from unified_ar.sampling import ImageSamplingConfig, generate_images

    was_training = model.training
    model.eval()
    try:
        cfg = ImageSamplingConfig.for_model(model, **settings)
        return generate_images(model, prompts, seeds=seed, cfg=cfg).images
    finally:
        model.train(was_training)


def _final_losses(run_dir: Path) -> list[float]:
    """The losses of the run's last :data:`FINAL_LOSS_STEPS` steps (``metrics.jsonl``, resumes included)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line)["loss"] for line in lines[-FINAL_LOSS_STEPS:]]


def end_of_stage(engine, run: WandbRun | None, config: TrainConfig, full_config: Any, result,
                 say: Callable[[str], None]) -> None:
    """The stage's summary figures and samples (collective at ZeRO-3 when samples are drawn)."""
    if run is not None:
        figures = {"steps": result.steps, "tokens_per_s": result.tokens_per_s,
                   "nonfinite_skipped": result.nonfinite_skipped}
        tail = _final_losses(result.run_dir)
        if tail:
            figures["final_loss"] = sum(tail) / len(tail)
        run.summarize(figures)
    if not _draws_samples(engine, config):
        return
    prompts = sample_prompts(config, full_config)
    if not prompts:
        say("wandb: no sample images (train.wandb_prompts is empty and the data has no captions source)")
        return
    if config.zero_stage == 3:
        # ZeRO-3's forward hooks gather each layer's weights around its forward only: the LLM runs
        # eager (the compiled decode step reads weights outside forwards); the VQ's codebook lookup
        # reads its weights directly, so the (small) VQ is gathered whole
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.vq.parameters()), modifier_rank=None):
            images = draw_samples(engine.module, prompts, config.seed, compile=False)
    else:
        images = draw_samples(engine.module, prompts, config.seed)
    if run is not None:
        run.log_images("samples", images, prompts, step=result.steps)
