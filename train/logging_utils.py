"""Where training metrics go: ``metrics.jsonl`` in the run dir and a tqdm bar (wandb:
:mod:`unified_ar.train.wandb_log`).

Only rank 0 writes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from unified_ar.train.config import TrainConfig

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL of per-step records; on resume, lines past the checkpoint are dropped
    (they came from the part of the killed run that is about to be redone)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self._handle = None

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Reporter:
    """Console progress bar, fed one record per logged step."""

    def __init__(self, config: TrainConfig, run_dir: Path, start_step: int, enabled: bool):
        self.enabled = enabled
        self.bar = tqdm(total=config.max_steps, initial=start_step, desc="train", dynamic_ncols=True,
                        disable=not (enabled and config.progress_bar))

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

    def show(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        shown = {k: _short(record[k]) for k in ("loss", "text_loss", "image_loss", "lr", "grad_norm",
                                                 "tokens_per_s", "padding") if record.get(k) is not None}
        self.bar.set_postfix(shown, refresh=False)

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)  # above the bar, whether or not the bar is shown

    def close(self) -> None:
        self.bar.close()


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)
