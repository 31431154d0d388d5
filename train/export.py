"""``unified-ar export RUN_DIR [--tag step_XXXXXXXX] [--out DIR]``: a checkpoint -> a from_pretrained directory.

Offline (no process group, any number of ranks at training time): the checkpoint's
ZeRO partitions are merged (:func:`~unified_ar.train.engine.consolidated_state_dict`),
loaded strictly into the model rebuilt from the run's ``config.yaml``, and written
with the model's own ``save_pretrained``. Training runs also export at their end
(``train.export_final``); this command exports any intermediate checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from unified_ar.train.checkpoint import checkpoint_dir, latest_tag
from unified_ar.train.engine import consolidated_state_dict


def load_full_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly; checkpoints may also carry non-persistent buffers, which are dropped."""
    expected = model.state_dict().keys()
    buffers = {name for name, _ in model.named_buffers()}
    extra = [k for k in state if k not in expected and k not in buffers]
    missing = [k for k in expected if k not in state]
    if extra or missing:
        raise KeyError(f"{source}: state dict does not match {type(model).__name__}: "
                       f"missing {missing[:10]} ({len(missing)}), unexpected {extra[:10]} ({len(extra)})")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)


def export_checkpoint(model: nn.Module, run_dir: str | Path, out: str | Path, tag: str | None = None) -> Path:
    """Write checkpoint ``tag`` (default: latest) of ``run_dir`` as ``model.save_pretrained(out)``."""
    tag = tag or latest_tag(run_dir)
    if tag is None:
        raise FileNotFoundError(f"{run_dir}: no complete checkpoint (no checkpoints/latest)")
    state = consolidated_state_dict(checkpoint_dir(run_dir), tag)
    load_full_state(model, state, f"{checkpoint_dir(run_dir) / tag}")
    model.save_pretrained(out)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    from unified_ar.config import load_config
    from unified_ar.train.stage_unified import StageConfig, build_model

    parser = argparse.ArgumentParser(prog="unified-ar export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: the latest complete one)")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/export-TAG")
    args = parser.parse_args(argv)
    config = load_config(StageConfig, args.run_dir / "config.yaml")
    tag = args.tag or latest_tag(args.run_dir)
    out = export_checkpoint(build_model(config), args.run_dir, args.out or args.run_dir / f"export-{tag}", tag)
    print(f"exported {args.run_dir} checkpoint {tag} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
