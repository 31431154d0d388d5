"""``unified-ar world``: generate the Shapes world and print its statistics."""
from __future__ import annotations

import argparse
import json
import time

from unified_ar.config import load_config
from unified_ar.train.shapes.world import WorldConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unified-ar world", description=__doc__)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--train", type=int, default=2000, help="number of training images")
    parser.add_argument("--val", type=int, default=200, help="number of validation images")
    parser.add_argument("--test", type=int, default=200, help="number of test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=None, help="YAML file with WorldConfig fields")
    args, overrides = parser.parse_known_args(argv)
    # overrides are WorldConfig fields: --jitter 2 or --world.jitter 2
    overrides = [o.replace("--world.", "--", 1) if o.startswith("--world.") else o for o in overrides]
    config = load_config(WorldConfig, args.config, overrides)

    from unified_ar.train.shapes.writer import write_world

    start = time.perf_counter()
    stats = write_world(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed, config)
    print(json.dumps(stats, indent=1))
    print(f"wrote the Shapes world to {args.out} in {time.perf_counter() - start:.1f}s")
    return 0
