"""Test helper run as a subprocess (plain python, torchrun or deepspeed launcher):
train TinyLM on PatternData through the real loop.

usage: python tests/run_tiny_train.py RUN_DIR [--resume] [--sleep-from POSITION] [--train.key VALUE ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers_train import PatternData, TinyLM, collate_pattern  # noqa: E402

from unified_ar.config import load_config  # noqa: E402
from unified_ar.train.config import TrainConfig  # noqa: E402
from unified_ar.train.data.sampler import MapBatches  # noqa: E402
from unified_ar.train.loop import train  # noqa: E402


class SlowFrom(MapBatches):
    """Sleeps before each micro-batch from `sleep_from` on, so a test can kill the run mid-way."""

    def __init__(self, *args, sleep_from: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.sleep_from = sleep_from

    def iter_from(self, position, rank, world_size):
        for next_position, batch in super().iter_from(position, rank, world_size):
            if next_position > self.sleep_from:
                time.sleep(0.5)
            yield next_position, batch


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep-from", type=int, default=10**9)
    parser.add_argument("--local_rank", type=int, default=None)  # passed by the deepspeed launcher
    args, rest = parser.parse_known_args(argv)
    overrides = {k[len("--train."):]: v for k, v in zip(rest[::2], rest[1::2])}
    config = load_config(TrainConfig, None, [x for k, v in overrides.items() for x in (f"--{k}", v)])
    torch.manual_seed(config.seed)
    data = SlowFrom(PatternData(size=64), collate_pattern, config.micro_batch_size, config.seed,
                    sleep_from=args.sleep_from)
    result = train(TinyLM(), data, config, args.run_dir, resume=args.resume)
    if result.losses:
        print(f"first_loss={result.losses[0]:.6f} last_loss={result.losses[-1]:.6f} steps={result.steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
