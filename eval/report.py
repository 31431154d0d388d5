"""``unified-ar report``: the demo's report from ``OUT/metrics.json``.

``write_report(OUT)`` writes ``OUT/report.html`` (plain HTML + CSS, images by
path relative to ``OUT``) and ``OUT/figures/*.png``:

* ``grid_<run>.png``: the first generated images of a run with their prompts;
* ``recon.png``: VQ reconstructions under their originals;
* ``loss_<run>.png``: loss curves of the run's training stages (align, unified).

``markdown_tables(metrics)`` gives the README's two tables (VQA accuracy by
question type, ShapesEval by attribute; a column per run). The layout of
``OUT`` and the schema of ``metrics.json`` are fixed in ``docs/CONTRACTS.md``;
parts the schema marks optional (tokenizers, a second run, a run's sections,
reconstruction images) are left out of the report when absent.

    python -m unified_ar.eval.report OUT [--markdown]
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unified_ar.config import ConfigError, from_dict
from unified_ar.files import write_atomic
from unified_ar.eval.t2i import image_name

VQA_TYPES = ("color", "shape", "count", "existence", "position", "size")
SHAPES_ATTRIBUTES = ("color", "shape", "size", "position", "count", "exact")
STAGE_ORDER = ("align", "unified")
LOSS_KEYS = ("loss", "text_loss", "image_loss")


class ReportError(ValueError):
    """An input of the report (metrics.json, a metrics.jsonl, a prompts file) is malformed."""


# ----------------------------------------------------------------------------- schema
@dataclass
class ShapesScores:
    """ShapesEval accuracies in [0, 1] (counts as ``ShapesEvalResult.summary()`` gives them)."""

    color: float
    shape: float
    size: float
    position: float
    count: float
    exact: float
    num_images: int | None = None
    num_objects: int | None = None
    by_objects: dict[str, dict[str, float]] | None = None  # the same scores per number of objects


@dataclass
class T2IScores(ShapesScores):
    """ShapesEval of a run's generated images, and the guidance scale they were sampled with."""

    cfg_scale: float = field(kw_only=True)  # required: no default, after the inherited defaults


@dataclass
class VQAScores:
    overall: float
    by_type: dict[str, float]


@dataclass
class InterleavedScores:
    agreement: float
    questions: int


@dataclass
class StageTrain:
    steps: int
    seconds: float
    final_loss: float
    metrics_jsonl: str  # relative to OUT


@dataclass
class RunMetrics:
    vqa: VQAScores | None = None  # val split
    t2i: T2IScores | None = None
    vqa_test: VQAScores | None = None  # test split: every scene holds a held-out colour-shape pair
    t2i_test: T2IScores | None = None
    interleaved: InterleavedScores | None = None
    train: dict[str, StageTrain] = field(default_factory=dict)


@dataclass
class VQMetrics:
    val_psnr: float
    codebook_usage: float
    recon_shapes_eval: ShapesScores
    patch_code_agreement: float | None = None  # absent in runs before it was measured
    patches_per_code: float | None = None


@dataclass
class TokLIPMetrics:
    r_at_1: float
    color_accuracy: float


@dataclass
class DemoMetrics:
    """``OUT/metrics.json`` as typed data (see docs/CONTRACTS.md)."""

    command: str
    config: dict[str, Any]
    machine: str
    total_seconds: float
    stage_seconds: dict[str, float]
    runs: dict[str, RunMetrics]
    vq: VQMetrics | None = None
    toklip: TokLIPMetrics | None = None


_TOP_KEYS = ("command", "config", "machine", "total_seconds", "stage_seconds", "tokenizers", "runs")
_RUN_SECTIONS = {"vqa": VQAScores, "t2i": T2IScores, "vqa_test": VQAScores, "t2i_test": T2IScores,
                 "interleaved": InterleavedScores}
# a run's evaluation sections, as table columns: (suffix of the section key, column label)
SPLIT_COLUMNS = (("", "val"), ("_test", "held-out pairs"))


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ReportError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(data: dict, known: tuple[str, ...], source: str, where: str = "") -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ReportError(f"{source}: {key}: unknown key (known keys: {', '.join(known)})")


def _typed(cls: type, data: Any, source: str, where: str) -> Any:
    """``from_dict`` of one section at dotted key ``where``; errors read ``source: where.key: ...``."""
    try:
        return from_dict(cls, _mapping(data, f"{source}: {where}"), "")
    except ConfigError as e:
        detail = str(e).removeprefix(": ")  # config.from_dict names its (empty) source first
        sep = ": " if detail.startswith("missing required") else "."
        raise ReportError(f"{source}: {where}{sep}{detail}") from None


def _parse_run(data: Any, source: str, where: str) -> RunMetrics:
    data = _mapping(data, f"{source}: {where}")
    _check_keys(data, (*_RUN_SECTIONS, "train"), source, where)
    run = RunMetrics()
    for key, cls in _RUN_SECTIONS.items():
        if key in data:
            setattr(run, key, _typed(cls, data[key], source, f"{where}.{key}"))
    for stage, stage_data in _mapping(data.get("train", {}), f"{source}: {where}.train").items():
        run.train[stage] = _typed(StageTrain, stage_data, source, f"{where}.train.{stage}")
    return run


def parse_metrics(data: Any, source: str = "<metrics>") -> DemoMetrics:
    """Check a loaded ``metrics.json`` against the schema; errors name ``source`` and the key."""
    data = _mapping(data, source)
    _check_keys(data, _TOP_KEYS, source)
    missing = [k for k in _TOP_KEYS if k != "tokenizers" and k not in data]
    if missing:
        raise ReportError(f"{source}: missing required key(s) {', '.join(missing)}")
    runs = {name: _parse_run(run, source, f"runs.{name}")
            for name, run in _mapping(data["runs"], f"{source}: runs").items()}
    tokenizers = _mapping(data.get("tokenizers", {}), f"{source}: tokenizers")
    _check_keys(tokenizers, ("vq", "toklip"), source, "tokenizers")
    typed = {key: _typed(cls, tokenizers[key], source, f"tokenizers.{key}")
             for key, cls in (("vq", VQMetrics), ("toklip", TokLIPMetrics)) if key in tokenizers}
    head = {k: data[k] for k in ("command", "config", "machine", "total_seconds", "stage_seconds")}
    try:
        return from_dict(DemoMetrics, {**head, "runs": runs, **typed}, source)
    except ConfigError as e:
        raise ReportError(str(e)) from None


def load_metrics(out_dir: str | Path) -> DemoMetrics:
    """Read and check ``OUT/metrics.json``."""
    path = Path(out_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file not found (run 'unified-ar demo --out {out_dir}')")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    return parse_metrics(data, str(path))


# ----------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A table of preformatted cells; the first column is a label, the rest are right-aligned."""

    header: list[str]
    rows: list[list[str]]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |",
                 "|---|" + "---:|" * (len(self.header) - 1)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in self.rows]) + "\n"

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n"
                       for row in self.rows)
        return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _columns(metrics: DemoMetrics, section: str) -> dict[str, Any]:
    """``run (split)`` -> the run's ``section`` scores, val then held-out pairs for each run."""
    return {f"{name} ({label})": getattr(run, section + suffix) for name, run in metrics.runs.items()
            for suffix, label in SPLIT_COLUMNS if getattr(run, section + suffix) is not None}


def vqa_table(metrics: DemoMetrics) -> Table | None:
    """Rows: question types (ours first, then any others), then overall; a column per run and split."""
    runs = _columns(metrics, "vqa")
    if not runs:
        return None
    seen = {t for vqa in runs.values() for t in vqa.by_type}
    types = [t for t in VQA_TYPES if t in seen] + sorted(seen - set(VQA_TYPES))
    rows = [[t] + [_num(vqa.by_type.get(t)) for vqa in runs.values()] for t in types]
    rows.append(["overall"] + [_num(vqa.overall) for vqa in runs.values()])
    return Table(["question type", *runs], rows)


def shapes_table(metrics: DemoMetrics) -> Table | None:
    """Rows: ShapesEval attributes, exact scene, the guidance scale; a column per run and split."""
    runs = _columns(metrics, "t2i")
    if not runs:
        return None
    rows = [[a] + [_num(getattr(t2i, a)) for t2i in runs.values()] for a in SHAPES_ATTRIBUTES]
    rows.append(["CFG scale"] + [_num(t2i.cfg_scale) for t2i in runs.values()])
    return Table(["attribute", *runs], rows)


def markdown_tables(metrics: dict) -> str:
    """The README's tables (VQA by question type, ShapesEval by attribute) as Markdown."""
    parsed = parse_metrics(metrics)
    parts = []
    for title, table in (("VQA accuracy by question type", vqa_table(parsed)),
                         ("ShapesEval of generated images by attribute", shapes_table(parsed))):
        if table is not None:
            parts.append(f"**{title}**\n\n{table.to_markdown()}")
    return "\n".join(parts)


def _other_tables(metrics: DemoMetrics) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    inter = {n: r.interleaved for n, r in metrics.runs.items() if r.interleaved is not None}
    if inter:
        tables["interleaved"] = Table(["run", "agreement", "questions"],
                                      [[n, _num(s.agreement), str(s.questions)] for n, s in inter.items()])
    train = [[n, stage, str(s.steps), _num(s.seconds, 1), _num(s.final_loss, 4)]
             for n, r in metrics.runs.items() for stage, s in _ordered_stages(r.train)]
    if train:
        tables["train"] = Table(["run", "stage", "steps", "seconds", "final loss"], train)
    stages = [[k, _num(v, 1)] for k, v in metrics.stage_seconds.items()]
    tables["time"] = Table(["stage", "seconds"], stages + [["total", _num(metrics.total_seconds, 1)]])
    tok = []
    if metrics.vq is not None:
        tok += [["VQ val PSNR (dB)", _num(metrics.vq.val_psnr)],
                ["VQ codebook usage", _num(metrics.vq.codebook_usage)]]
        if metrics.vq.patch_code_agreement is not None:
            tok += [["VQ patch-code agreement", _num(metrics.vq.patch_code_agreement)],
                    ["VQ distinct patches per code", _num(metrics.vq.patches_per_code)]]
        tok += [[f"VQ reconstruction ShapesEval {a}", _num(getattr(metrics.vq.recon_shapes_eval, a))]
                for a in SHAPES_ATTRIBUTES]
    if metrics.toklip is not None:
        tok += [["TokLIP R@1", _num(metrics.toklip.r_at_1)],
                ["TokLIP colour accuracy", _num(metrics.toklip.color_accuracy)]]
    if tok:
        tables["tokenizers"] = Table(["metric", "value"], tok)
    return tables


def _ordered_stages(train: dict[str, StageTrain]) -> list[tuple[str, StageTrain]]:
    names = [s for s in STAGE_ORDER if s in train] + [s for s in train if s not in STAGE_ORDER]
    return [(s, train[s]) for s in names]


# ----------------------------------------------------------------------------- inputs
def read_loss_log(path: Path) -> dict[str, np.ndarray]:
    """``metrics.jsonl`` of a training run -> {"step": [n], "loss": [n], "text_loss": [m], ...}.

    Optional losses are kept only when every record has them."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training metrics log not found")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}:{n}: not valid JSON ({e})") from None
        for key in ("step", "loss"):
            if not isinstance(rec.get(key), (int, float)) or isinstance(rec.get(key), bool):
                raise ReportError(f"{path}:{n}: record needs a number '{key}', got {rec.get(key)!r}")
        records.append(rec)
    if not records:
        raise ReportError(f"{path}: no records")
    out = {"step": np.array([r["step"] for r in records], dtype=np.float64)}
    for key in LOSS_KEYS:
        if all(isinstance(r.get(key), (int, float)) for r in records):
            out[key] = np.array([r[key] for r in records], dtype=np.float64)
    return out


def _prompts_file(out: Path, run_dir: Path) -> Path:
    """The prompts that eval-t2i used (its metrics.json 'prompts'), else the world's val prompts."""
    candidates = []
    t2i_json = run_dir / "eval_t2i" / "metrics.json"
    if t2i_json.is_file():
        try:
            recorded = json.loads(t2i_json.read_text()).get("prompts")
        except json.JSONDecodeError as e:
            raise ReportError(f"{t2i_json}: not valid JSON ({e})") from None
        if isinstance(recorded, str):
            # eval-t2i records the path as given on its command line: absolute, or relative to
            # OUT (the demo's layout) or to the directory the demo ran in.
            candidates += [Path(recorded), out / recorded]
    candidates.append(out / "world" / "t2i_prompts_val.jsonl")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{run_dir / 'eval_t2i'}: no prompts file for the images "
                            f"(tried {', '.join(str(p) for p in candidates)})")


def generated_images(out: Path, name: str) -> list[tuple[str, str]]:
    """[(image path relative to OUT, prompt)] for a run's eval_t2i images, in prompt order."""
    run_dir = out / "runs" / name
    folder = run_dir / "eval_t2i" / "images"
    if not folder.is_dir():
        return []
    from unified_ar.eval.t2i import read_prompts

    prompts_path = _prompts_file(out, run_dir)
    pairs = [(folder / image_name(p["index"]), p["prompt"]) for p in read_prompts(prompts_path)]
    found = [(str(path.relative_to(out)), prompt) for path, prompt in pairs if path.is_file()]
    if not found and any(folder.glob("*.png")):
        raise ReportError(f"{folder}: no image matches an index of {prompts_path}")
    return found


def reconstruction_pairs(out: Path) -> list[tuple[str, str]]:
    """[(original, reconstruction)] paths relative to OUT, by file name; [] without recon images."""
    recon = out / "recon"
    if not (recon / "originals").is_dir():
        return []
    return [(str(orig.relative_to(out)), str((recon / orig.name).relative_to(out)))
            for orig in sorted((recon / "originals").glob("*.png")) if (recon / orig.name).is_file()]


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- figures
def _figure(width: float, height: float):
    # A Figure on an explicit Agg canvas: no pyplot, so no global backend or figure registry
    # is touched and nothing depends on a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _show(ax, image: np.ndarray, label: str | None = None, fontsize: float = 6) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if label is not None:
        ax.set_xlabel(label, fontsize=fontsize)


def grid_figure(out: Path, images: list[tuple[str, str]], path: Path, columns: int = 4) -> Path:
    """The images (paths relative to ``out``) in a grid, each prompt wrapped underneath."""
    rows = math.ceil(len(images) / columns)
    fig = _figure(columns * 1.9, rows * 2.3)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(images):
            rel, prompt = images[i]
            _show(ax, _rgb(out / rel), textwrap.fill(prompt, 30))
        else:
            ax.set_axis_off()
    fig.savefig(path, dpi=100)
    return path


def recon_figure(out: Path, pairs: list[tuple[str, str]], path: Path) -> Path:
    """Originals (top row) above their VQ reconstructions (bottom row)."""
    fig = _figure(len(pairs) * 1.2 + 0.6, 2.8)
    axes = fig.subplots(2, len(pairs), squeeze=False)
    for col, (orig, recon) in enumerate(pairs):
        _show(axes[0, col], _rgb(out / orig))
        _show(axes[1, col], _rgb(out / recon), Path(orig).stem)
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("VQ recon", fontsize=8)
    fig.savefig(path, dpi=100)
    return path


def _smooth(values: np.ndarray) -> np.ndarray:
    # Per-step losses of small batches are noisy; a running mean over ~1/50 of the run shows the
    # trend (and the sudden drop the Shapes runs have) without hiding it.
    window = max(1, len(values) // 50)
    if window == 1:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def loss_figure(name: str, logs: list[tuple[str, dict[str, np.ndarray]]], path: Path) -> Path:
    """One panel per training stage: loss (and text / image loss when logged) against step."""
    fig = _figure(4.2 * len(logs), 3.0)
    axes = fig.subplots(1, len(logs), squeeze=False)[0]
    for ax, (stage, log) in zip(axes, logs):
        for key in LOSS_KEYS:
            if key not in log:
                continue
            smooth = _smooth(log[key])
            line, = ax.plot(log["step"], log[key], linewidth=0.5, alpha=0.3)
            ax.plot(log["step"][len(log["step"]) - len(smooth):], smooth, color=line.get_color(),
                    linewidth=1.2, label=key)
        ax.set_title(f"{name}: {stage}", fontsize=9)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------------------- page
_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 10px}
td:not(:first-child){text-align:right}th{background:#f0f0f0}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;width:140px;font-size:11px}
.grid img{width:128px;height:128px;image-rendering:pixelated;border:1px solid #ccc}
img.figure{max-width:100%}"""


def _img(rel: str, alt: str, cls: str = "figure") -> str:
    return f'<img class="{cls}" src="{html.escape(rel)}" alt="{html.escape(alt)}">'


def _gallery(images: list[tuple[str, str]]) -> str:
    cells = "".join(f"<figure>{_img(rel, prompt, 'cell')}<figcaption>{html.escape(prompt)}</figcaption>"
                    "</figure>\n" for rel, prompt in images)
    return f'<div class="grid">\n{cells}</div>\n'


@dataclass
class ReportOptions:
    """How much of each run the report shows."""

    grid_images: int = 16  # in figures/grid_<run>.png (the README embeds it)
    page_images: int = 64  # per run on the HTML page
    recon_pairs: int = 8


def _figures(out: Path, metrics: DemoMetrics, opts: ReportOptions) -> tuple[dict, dict, str | None]:
    """Write figures/*.png; returns (run -> images for the page, run -> figure paths, recon figure)."""
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    gallery, run_figs = {}, {}
    for name, run in metrics.runs.items():
        images = generated_images(out, name)
        gallery[name] = images[: opts.page_images]
        run_figs[name] = {}
        if images:
            run_figs[name]["grid"] = grid_figure(out, images[: opts.grid_images], figures / f"grid_{name}.png")
        if run.train:
            logs = [(stage, read_loss_log(out / s.metrics_jsonl)) for stage, s in _ordered_stages(run.train)]
            run_figs[name]["loss"] = loss_figure(name, logs, figures / f"loss_{name}.png")
    pairs = reconstruction_pairs(out)[: opts.recon_pairs]
    recon = str(recon_figure(out, pairs, figures / "recon.png").relative_to(out)) if pairs else None
    return gallery, run_figs, recon


def _rel(out: Path, path: Path) -> str:
    return str(path.relative_to(out))


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}"


def _page(out: Path, metrics: DemoMetrics, opts: ReportOptions) -> str:
    gallery, run_figs, recon = _figures(out, metrics, opts)
    tables = _other_tables(metrics)
    parts = [f"<h1>Unified AR demo report</h1>\n<p>machine: {html.escape(metrics.machine)}; "
             f"total time {metrics.total_seconds:.1f} s</p>\n<pre>{html.escape(metrics.command)}</pre>\n"]
    results = "".join(f"<h3>{title}</h3>\n{t.to_html()}" for title, t in (
        ("VQA accuracy by question type", vqa_table(metrics)),
        ("ShapesEval of generated images by attribute", shapes_table(metrics)),
        ("Interleaved check", tables.get("interleaved")))
        if t is not None)
    parts.append(_section("Results", results))
    for name in metrics.runs:
        if gallery[name]:
            parts.append(_section(f"Generated images: {name}",
                                  _img(_rel(out, run_figs[name]["grid"]), f"grid {name}") + _gallery(gallery[name])))
    if "tokenizers" in tables or recon:
        body = tables["tokenizers"].to_html() if "tokenizers" in tables else ""
        body += f"<h3>VQ reconstructions (top: original)</h3>\n{_img(recon, 'reconstructions')}" if recon else ""
        parts.append(_section("Tokenizers", body))
    if "train" in tables:
        curves = "".join(_img(_rel(out, f["loss"]), f"loss {n}") for n, f in run_figs.items() if "loss" in f)
        parts.append(_section("Training", tables["train"].to_html() + curves))
    parts.append(_section("Time per stage", tables["time"].to_html()))
    parts.append(_section("Resolved config", f"<pre>{html.escape(json.dumps(metrics.config, indent=2))}</pre>"))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>Unified AR demo report</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
            f"<body>\n{body}</body>\n</html>\n")


def write_report(out_dir: str | Path, options: ReportOptions | None = None) -> Path:
    """Write ``OUT/report.html`` and ``OUT/figures/*.png`` from ``OUT/metrics.json``; returns the page."""
    out = Path(out_dir)
    metrics = load_metrics(out)
    page = _page(out, metrics, options or ReportOptions())
    path = out / "report.html"
    write_atomic(path, page)  # a reader never sees half a page
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="unified-ar report", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the demo's output directory (holds metrics.json)")
    p.add_argument("--markdown", action="store_true",
                   help="only print the README's tables as Markdown (needs nothing but metrics.json)")
    args = p.parse_args(argv)
    try:
        if args.markdown:
            load_metrics(args.out)  # the schema check, with its errors
            print(markdown_tables(json.loads((Path(args.out) / "metrics.json").read_text())))
            return 0
        path = write_report(args.out)
    except (FileNotFoundError, ReportError) as e:
        print(f"unified-ar report: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
