"""The ``unified-ar`` command: a thin dispatcher over subcommand modules.

Each subcommand lives beside the code it drives and exposes ``main(argv)``;
modules are imported only when their command runs, so ``unified-ar --help``
stays fast and importing this file has no side effects.
"""
from __future__ import annotations

import importlib
import sys

from unified_ar.config import ConfigError

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("unified_ar.demo", "the main job: train and evaluate the whole stack on the Shapes world"),
    "demo-sweep": ("unified_ar.demo_sweep", "the demo over several seeds: each seed's figures, the minimum, the bars"),
    "world": ("unified_ar.train.shapes.cli", "generate the Shapes world and print its statistics"),
    "eval-vqa": ("unified_ar.eval.vqa_runner", "answer or score a VQA benchmark (official-equivalent metrics)"),
    "eval-t2i": ("unified_ar.eval.t2i", "evaluate text-to-image: ShapesEval, TokLIP score, FID, GenEval export"),
    "sample": ("unified_ar.commands.sample", "text-to-image for a prompts file: PNGs, a grid, a JSON record"),
    "chat": ("unified_ar.commands.chat", "interactive multi-turn chat; /draw draws, then ask about the drawing"),
    "serve": ("unified_ar.commands.serve", "a web app (Gradio): chat about pictures and drawings in one conversation"),
    "model-info": ("unified_ar.commands.model_info", "parameter counts and bf16 training memory, built on meta"),
    "report": ("unified_ar.eval.report", "write the demo report from OUT/metrics.json"),
    "train": ("unified_ar.train.stage_unified", "train the unified model: a stage config (align / unified / sft)"),
    "pretokenize": ("unified_ar.train.pretokenize", "encode the images of data files to VQ codes, once"),
    "export": ("unified_ar.train.export", "write a training checkpoint as a from_pretrained directory"),
    "train-vq": ("unified_ar.train.stage_vq", "train (or --eval) the VQ tokenizer; prints val PSNR and codebook usage"),
    "train-toklip": ("unified_ar.train.stage_toklip", "train (or --eval) TokLIP; prints retrieval R@1 and colour accuracy"),
}


def register(name: str, module: str, help_text: str) -> None:
    COMMANDS[name] = (module, help_text)


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: unified-ar COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run 'unified-ar COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unified-ar: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except ConfigError as e:
        print(f"unified-ar {name}: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
