"""``unified-ar demo-sweep``: the demo over several seeds, and each seed's figures against its bars.

    unified-ar demo-sweep --out runs/sweep --seeds 0 1 2 3 4 [--comprehension-features both] [--fast]

Each seed is one ``unified-ar demo --out OUT/seed{s} --seed s`` (the same config and overrides
otherwise; the demo's ``seed`` draws the world and seeds the evaluations' sampling, the stages'
training seeds are their configs'), so a killed sweep resumes where it stopped: finished demos and stages are kept. The
table has a row per seed and the minimum over seeds, for each comprehension-feature run side by
side: VQA overall and its lowest question type, generated colour and exact scenes (val), the
held-out-pair figures (test), and the demo's seconds. It is printed and written to
``OUT/sweep.md``; ``OUT/sweep.json`` holds the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from unified_ar.files import write_atomic

# the embedded default's bars (README "What the demo shows")
BARS = {"vqa": 0.9, "vqa_type": 0.8, "color": 0.95, "exact": 0.8, "seconds": 1200.0}
COLUMNS = ("vqa", "vqa_type", "color", "exact", "vqa_test", "exact_test")


@dataclass
class SeedRun:
    """One variant's figures of one seed's demo."""

    seed: int
    variant: str
    figures: dict[str, float | None]  # None: the demo had no test-split evaluation
    seconds: float

    def meets_bars(self) -> bool:
        f = self.figures
        return (f["vqa"] >= BARS["vqa"] and f["vqa_type"] >= BARS["vqa_type"] and f["color"] >= BARS["color"]
                and f["exact"] >= BARS["exact"] and self.seconds <= BARS["seconds"])


def seed_runs(seed: int, metrics: dict, source: str) -> list[SeedRun]:
    """The figures of every run in one demo's ``metrics.json`` (checked by the report's schema)."""
    from unified_ar.eval.report import parse_metrics

    parsed = parse_metrics(metrics, source)
    out = []
    for variant, run in parsed.runs.items():
        if run.vqa is None or run.t2i is None:
            raise ValueError(f"{source}: runs.{variant} has no vqa / t2i figures (an unfinished demo?)")
        figures = {"vqa": run.vqa.overall, "vqa_type": min(run.vqa.by_type.values()),
                   "color": run.t2i.color, "exact": run.t2i.exact,
                   "vqa_test": run.vqa_test.overall if run.vqa_test else None,
                   "exact_test": run.t2i_test.exact if run.t2i_test else None}
        out.append(SeedRun(seed, variant, figures, parsed.total_seconds))
    return out


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def sweep_table(runs: list[SeedRun]) -> str:
    """Markdown: a row per seed, a column group per variant, then the minimum over the seeds."""
    variants = sorted({r.variant for r in runs}, key=lambda v: (v != "toklip", v))
    seeds = sorted({r.seed for r in runs})
    by = {(r.seed, r.variant): r for r in runs}
    header = ["seed"] + [f"{v} {c}" for v in variants for c in COLUMNS] + ["seconds", "bars met"]
    rows = []
    for s in seeds:
        cells = [str(s)]
        for v in variants:
            cells += [_cell(by[s, v].figures[c]) if (s, v) in by else "" for c in COLUMNS]
        mine = [by[s, v] for v in variants if (s, v) in by]
        cells += [f"{mine[0].seconds:.0f}", ", ".join(r.variant for r in mine if r.meets_bars()) or "none"]
        rows.append(cells)
    low = ["min"]
    for v in variants:
        low += [_cell(min((r.figures[c] for r in runs if r.variant == v and r.figures[c] is not None),
                          default=None)) for c in COLUMNS]
    low += [f"{max(r.seconds for r in runs):.0f} (max)", ""]
    rows.append(low)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def read_sweep(out: Path, seeds: list[int]) -> list[SeedRun]:
    runs = []
    for s in seeds:
        path = out / f"seed{s}" / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (the demo of seed {s} did not finish)")
        runs += seed_runs(s, json.loads(path.read_text()), str(path))
    return runs


def main(argv: list[str] | None = None) -> int:
    from unified_ar import demo

    p = argparse.ArgumentParser(prog="unified-ar demo-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--report-only", action="store_true", help="only tabulate the finished demos under --out")
    args, demo_args = p.parse_known_args(argv)
    out = Path(args.out)
    if not args.report_only:
        for s in args.seeds:
            print(f"[sweep] seed {s}", flush=True)
            demo.main(["--out", str(out / f"seed{s}"), *demo_args, "--seed", str(s)])
    try:
        runs = read_sweep(out, args.seeds)
    except (FileNotFoundError, ValueError) as e:
        print(f"unified-ar demo-sweep: {e}", file=sys.stderr)
        return 2
    table = sweep_table(runs)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "sweep.md", table)
    write_atomic(out / "sweep.json", json.dumps([r.__dict__ for r in runs], indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
