"""``unified-ar demo``: the whole stack, end to end, on the embedded default.

world -> VQ -> TokLIP -> unified model (align, then unified) -> VQA on val ->
text-to-image on val prompts judged by ShapesEval -> the interleaved check ->
``metrics.json`` and ``report.html``. Every stage runs through the same
commands a user runs (``cli.main``), records its time, and is skipped when it
already finished in the same output directory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from unified_ar.config import ConfigError, load_config, packaged_config, save_config, to_dict
from unified_ar.files import write_atomic
from unified_ar.train.shapes.world import WorldConfig


@dataclass
class DemoConfig:
    """The demo's stages; each names a packaged config (``configs/...``) plus overrides."""

    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    train_images: int = 5000
    val_images: int = 200
    test_images: int = 200
    vq_config: str = "vq/shapes.yaml"
    vq_overrides: list[str] = field(default_factory=list)
    toklip_config: str = "toklip/shapes.yaml"
    toklip_overrides: list[str] = field(default_factory=list)
    align_config: str = "train/align.yaml"
    align_overrides: list[str] = field(default_factory=list)
    unified_config: str = "train/unified.yaml"
    unified_overrides: list[str] = field(default_factory=list)
    conversation_weight: float = 1.0  # sampling weight of the conversations against the captions' 1
    comprehension_features: Literal["toklip", "vq", "both"] = "toklip"
    cfg_scale: float = 1.0  # the export's guidance (its generation_config.json), for every drawing
    eval_val_images: int = 200  # val images whose questions are asked / prompts drawn
    eval_batch_size: int = 32
    interleaved_prompts: int = 50
    recon_images: int = 200

    def __post_init__(self):
        if not self.conversation_weight > 0:
            raise ConfigError(f"conversation_weight: must be > 0 (the captions weigh 1), "
                              f"got {self.conversation_weight}")


def _marker(out: Path, name: str) -> Path:
    return out / ".stages" / (name.replace("/", "__") + ".json")


def run_stage(out: Path, name: str, fn: Callable[[], dict | None], timings: dict) -> dict:
    """Run ``fn`` once per output directory: a finished stage leaves a marker with its result."""
    marker = _marker(out, name)
    if marker.is_file():
        result = json.loads(marker.read_text())
        print(f"[demo] {name}: done already ({result['seconds']:.0f}s), skipped", flush=True)
    else:
        print(f"[demo] {name} ...", flush=True)
        start = time.perf_counter()
        result = dict(fn() or {})
        result["seconds"] = round(time.perf_counter() - start, 2)
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(marker, json.dumps(result, indent=1) + "\n")
        print(f"[demo] {name}: {result['seconds']:.0f}s", flush=True)
    timings[name] = result["seconds"]
    return result


def command(argv: list[str]) -> None:
    """Run a ``unified-ar`` subcommand in this process; a failure stops the demo."""
    from unified_ar import cli

    print("[demo] $ unified-ar " + " ".join(shlex.quote(a) for a in argv), flush=True)
    rc = cli.main(argv)
    if rc != 0:
        raise RuntimeError(f"unified-ar {argv[0]} exited with {rc}; fix the cause and rerun the demo "
                           "on the same --out (finished stages are kept)")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``; else ``platform.processor()``, which may be
    empty). Two machines of one kind can differ here, and with them the demo's seconds and the
    rounding of its bf16 / fused kernels (docs/DEMO.md, "Determinism")."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    import torch

    return (f"{platform.machine()} {platform.system()}, {cpu_model()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}")


def variants(config: DemoConfig) -> list[str]:
    return ["toklip", "vq"] if config.comprehension_features == "both" else [config.comprehension_features]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="unified-ar demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--fast", action="store_true", help="the 4-minute smoke version (configs/demo/fast.yaml)")
    parser.add_argument("--config", default=None, help="a DemoConfig YAML (default: configs/demo/default.yaml)")
    parser.add_argument("--comprehension-features", choices=["toklip", "vq", "both"], default=None,
                        help="toklip (default), vq (the ablation: raw VQ code vectors), or both side by side")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    if args.config and args.fast:
        raise ConfigError("--fast chooses configs/demo/fast.yaml; give either --fast or --config")
    path = args.config or packaged_config("demo/fast.yaml" if args.fast else "demo/default.yaml")
    if args.comprehension_features:
        overrides += ["--comprehension_features", args.comprehension_features]
    config = load_config(DemoConfig, path, overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out, "demo_config.yaml")

    from unified_ar.demo_stages import run_all

    # total_seconds is the sum of the stages' own times, so a rerun that skips
    # finished stages still reports what the whole run took
    metrics = run_all(config, out)
    metrics.update(command="unified-ar " + " ".join(["demo", *map(shlex.quote, argv or sys.argv[2:])]),
                   config=to_dict(config), machine=machine())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    from unified_ar.eval.report import markdown_tables, write_report

    report = write_report(out)
    print(markdown_tables(metrics))
    print(f"[demo] finished in {metrics['total_seconds']:.0f}s; report: {report}")
    return 0
