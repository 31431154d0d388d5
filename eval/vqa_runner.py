"""``unified-ar eval-vqa``: answer a VQA benchmark with a model, or score a predictions file.

Run mode (``--model DIR``): the benchmark's questions are split across ranks
(``RANK`` / ``WORLD_SIZE``, interleaved), answered in batches by an
``answer_fn(list[VQASample]) -> list[str]`` and appended to
``OUT/predictions.rank{r}-of-{w}.jsonl`` after every batch. A rerun skips every
question already answered in any shard file of ``OUT`` (so it may even use a
different number of ranks). The rank that completes the set merges the shards
(deduplicated by question id, independent of finishing order), writes
``predictions.jsonl``, ``metrics.json`` and ``metrics.md``.

Score-only mode (``--predictions FILE``): scores a file in the official results
format without a model and prints the metrics JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from unified_ar.devices import DEVICE_HELP
from unified_ar.eval.benchmarks.base import BENCHMARKS, BenchmarkOptions, VQASample, get_benchmark
from unified_ar.eval.predictions import (
    append_records, merge_shards, read_benchmark_predictions, repair_tail, shard_path,
)
from unified_ar.eval.vqa_accuracy import ANSWER_PROCESSING
from unified_ar.files import write_atomic
from unified_ar.generation_config import MODEL_DEFAULT, GenerationConfig, PromptFormat, flags_given

AnswerFn = Callable[[list[VQASample]], list[str]]


def dist_info() -> tuple[int, int]:
    """(rank, world_size) from the environment (torchrun / deepspeed set them)."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError("RANK and WORLD_SIZE must be integers") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def answer_shard(samples: Sequence[VQASample], answer_fn: AnswerFn, out_dir: str | Path,
                 batch_size: int = 8, rank: int = 0, world_size: int = 1, progress: bool = True) -> int:
    """Answer this rank's share of ``samples`` not yet answered in ``out_dir``; return how many were new."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = shard_path(out_dir, rank, world_size)
    repair_tail(path)
    done, _ = merge_shards(out_dir)
    todo = [s for s in list(samples)[rank::world_size] if s.key not in done]
    bar = tqdm(total=len(todo), desc=f"eval rank {rank}/{world_size}", unit="q", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        answers = answer_fn(batch)
        if len(answers) != len(batch):
            raise RuntimeError(f"answer_fn returned {len(answers)} answers for {len(batch)} questions")
        append_records(path, ({"question_id": s.question_id, "prompt": s.prompt, "text": str(a)}
                              for s, a in zip(batch, answers)))
        bar.update(len(batch))
    bar.close()
    return len(todo)


def metrics_markdown(metrics: dict, title: str) -> str:
    """A two-column markdown table of the (flattened) metrics."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, float):
            rows.append((prefix, f"{value:.2f}"))
        else:
            rows.append((prefix, str(value)))

    walk("", metrics)
    lines = [f"## {title}", "", "| metric | value |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows]) + "\n"


def finalize(samples: Sequence[VQASample], benchmark: str, data_dir: str | Path, out_dir: str | Path,
             options: BenchmarkOptions, limited: bool) -> dict | None:
    """Merge shards and score when every question has an answer; None while some are missing."""
    out_dir = Path(out_dir)
    merged, conflicts = merge_shards(out_dir)
    missing = [s.key for s in samples if s.key not in merged]
    if missing:
        print(f"eval-vqa: {len(missing)} of {len(samples)} questions still unanswered "
              "(other ranks running?); the rank that finishes last writes the metrics", file=sys.stderr)
        return None
    ordered = [merged[s.key] for s in samples]
    write_atomic(out_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in ordered))
    predictions = {s.key: merged[s.key]["text"] for s in samples}
    only = [s.key for s in samples] if limited else None
    metrics = get_benchmark(benchmark).score(predictions, data_dir, options, only=only)
    metrics["merge_conflicts"] = conflicts
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    write_atomic(out_dir / "metrics.md", metrics_markdown(metrics, f"{benchmark} ({len(samples)} questions)"))
    return metrics


def evaluate(answer_fn: AnswerFn, benchmark: str, data_dir: str | Path, out_dir: str | Path,
             options: BenchmarkOptions = BenchmarkOptions(), batch_size: int = 8, limit: int | None = None,
             progress: bool = True) -> dict | None:
    """Answer (resuming) this rank's shard, then merge and score if the set is complete."""
    samples = get_benchmark(benchmark).load(data_dir, options)
    if limit is not None:
        samples = samples[:limit]
    rank, world = dist_info()
    answer_shard(samples, answer_fn, out_dir, batch_size, rank, world, progress)
    return finalize(samples, benchmark, data_dir, out_dir, options, limited=limit is not None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unified-ar eval-vqa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--data", required=True, help="folder with the benchmark's official files")
    p.add_argument("--model", help="model directory (run mode)")
    p.add_argument("--predictions", help="score this results file without a model (score-only mode)")
    p.add_argument("--out", help="output folder (default: eval_out/<benchmark>)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--split", default=None, help="split name in the official file names")
    p.add_argument("--image-dir", default=None, help="images folder, if not the usual place under --data")
    p.add_argument("--answer-processing", default="llava", choices=ANSWER_PROCESSING)
    p.add_argument("--no-circular", action="store_true", help="MMBench: ask each question once")
    p.add_argument("--short-answer-suffix", default=None,
                   help=f"text after short-answer questions ('' for none; {MODEL_DEFAULT})")
    p.add_argument("--multiple-choice-suffix", default=None,
                   help=f"text after multiple-choice questions ('' for none; {MODEL_DEFAULT})")
    p.add_argument("--max-new-tokens", type=int, default=None, help=f"answer length ({MODEL_DEFAULT})")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--submission", default=None,
                   help="vqav2/vizwiz: also write the EvalAI upload file here; mmmu: the {id: answer} "
                        "upload (test splits)")
    return p


def _options(args: argparse.Namespace, prompts: PromptFormat) -> BenchmarkOptions:
    """The benchmark options: the model's prompt format (``prompts``), then the flags given."""
    return BenchmarkOptions(split=args.split, image_dir=args.image_dir, answer_processing=args.answer_processing,
                            circular=not args.no_circular,
                            **{**asdict(prompts), **flags_given(short_answer_suffix=args.short_answer_suffix,
                                                                multiple_choice_suffix=args.multiple_choice_suffix)})


def _write_submission(args: argparse.Namespace, predictions: dict[str, str], options: BenchmarkOptions) -> None:
    if args.benchmark == "vqav2":
        from unified_ar.eval.benchmarks.vqav2 import DEFAULT_SPLIT, questions_file, write_submission
        info = write_submission(predictions, questions_file(args.data, options.split or DEFAULT_SPLIT), args.submission)
    elif args.benchmark == "vizwiz":
        from unified_ar.eval.benchmarks.vizwiz import write_submission
        info = write_submission(predictions, args.data, args.submission, options)
    elif args.benchmark == "mmmu":
        from unified_ar.eval.benchmarks.mmmu import write_submission
        info = write_submission(predictions, args.data, args.submission, options)
    else:
        raise ValueError(f"--submission: only vqav2, vizwiz (EvalAI) and mmmu ({{id: answer}}) have an upload "
                         f"format, not {args.benchmark}")
    print(json.dumps(info), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.model is None) == (args.predictions is None):
        print("eval-vqa: give exactly one of --model (run) or --predictions (score only)", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        # bad input files / options: one line naming the file or key, not a traceback
        print(f"unified-ar eval-vqa: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    # the prompt format the model was trained with (its generation_config.json); scoring needs none
    generation = GenerationConfig.load(args.model) if args.model is not None else GenerationConfig()
    options = _options(args, generation.prompts)
    if args.predictions is not None:
        predictions = read_benchmark_predictions(get_benchmark(args.benchmark), args.predictions, args.data, options)
        if args.submission:
            _write_submission(args, predictions, options)
            return 0
        metrics = get_benchmark(args.benchmark).score(predictions, args.data, options)
        print(json.dumps(metrics, indent=1))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            write_atomic(Path(args.out) / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        return 0
    from unified_ar.eval.model_adapter import load_answer_fn

    max_new_tokens = args.max_new_tokens if args.max_new_tokens is not None else generation.text.answer_max_new_tokens
    answer_fn = load_answer_fn(args.model, max_new_tokens=max_new_tokens, device=args.device)
    out = Path(args.out or Path("eval_out") / args.benchmark)
    if args.submission:
        samples = get_benchmark(args.benchmark).load(args.data, options)[: args.limit]
        rank, world = dist_info()
        answer_shard(samples, answer_fn, out, args.batch_size, rank, world)
        merged, _ = merge_shards(out)
        _write_submission(args, {k: r["text"] for k, r in merged.items()}, options)
        return 0
    metrics = evaluate(answer_fn, args.benchmark, args.data, out, options, args.batch_size, args.limit)
    if metrics is not None:
        print(json.dumps(metrics, indent=1))
    return 0
