"""``unified-ar eval-t2i``: text-to-image evaluation.

Images come from a folder (``--images DIR``: ``NNNN.png`` named by the prompt's
``index``) or are sampled from a model (``--model DIR``; written to
``OUT/images/NNNN.png``, existing files are kept, so a killed run resumes; ``OUT/images/sampling.json``
records the model, guidance and seed, and a folder sampled with other settings is an error).
Prompts are JSONL ``{"index", "prompt", "spec"}`` (the Shapes world's
``t2i_prompts_{split}.jsonl``). Reported: ShapesEval (when prompts carry a
spec), TokLIP score (``--toklip DIR --text-tokenizer DIR``), FID
(``--fid-ref DIR --fid-extractor FILE``); ``--geneval-out DIR`` exports the
GenEval folder layout. Writes ``OUT/metrics.json``, ``OUT/metrics.md`` and
``OUT/shapes_eval.jsonl`` (per-image detections).

Official benchmarks' prompts, sampled from ``--model`` into the folder their own scorer reads
(scoring needs their detectors / VQA models, which are not here):

* ``--geneval-metadata FILE``: GenEval's ``prompts/evaluation_metadata.jsonl`` as it is ->
  ``OUT/geneval/{i:05d}/metadata.jsonl`` (line ``i`` as written), ``samples/{k:05d}.png``
  (``--n-samples``, default 4) and ``grid.png``: what djghosh13/geneval
  ``generation/diffusers_generate.py`` writes and ``evaluation/evaluate_images.py`` walks.
* ``--dpg-prompts DIR``: ELLA's ``dpg_bench/prompts/*.txt`` -> ``OUT/dpg/{stem}.png``, a 2x2
  grid of 4 samples without gaps, the tiles ``compute_dpg_bench.py --resolution R`` crops.

Sample ``k`` of prompt ``i`` (file line / sorted file name) is drawn with seed
``--seed + 1000 * i + k``; a rerun draws only what is missing (``OUT/geneval.sampling.json`` /
``OUT/dpg.sampling.json`` record the settings, as ``OUT/images/sampling.json`` does for ``--prompts``).
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from unified_ar.config import from_dict
from unified_ar.devices import DEVICE_HELP
from unified_ar.files import TMP_SUFFIX, write_atomic
from unified_ar.train.shapes.world import WorldConfig


def read_prompts(path: str | Path) -> list[dict]:
    """Prompt records; each needs ``index`` (int, unique) and ``prompt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompts file not found")
    rows, seen = [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("index"), int) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}:{n}: a prompt needs an int 'index' and a str 'prompt'")
        if row["index"] in seen:
            raise ValueError(f"{path}:{n}: index {row['index']} appears twice")
        seen.add(row["index"])
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def world_config(prompts_path: str | Path, world_json: str | Path | None) -> WorldConfig:
    """The world's config from ``world.json`` (given, or beside the prompts file), else defaults."""
    path = Path(world_json) if world_json else Path(prompts_path).parent / "world.json"
    if not path.is_file():
        if world_json:
            raise FileNotFoundError(f"--world {path}: file not found")
        return WorldConfig()
    data = json.loads(path.read_text())
    return from_dict(WorldConfig, data.get("config", data), str(path))


def image_name(index: int) -> str:
    return f"{index:04d}.png"


def read_images(folder: str | Path, prompts: Sequence[dict]) -> list[np.ndarray]:
    """uint8 [H, W, 3] per prompt, from files whose stem is the prompt index (``0007.png`` or ``7.png``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: images folder not found")
    by_index = {int(p.stem): p for p in folder.iterdir()
                if p.suffix.lower() in (".png", ".jpg", ".jpeg") and re.fullmatch(r"\d+", p.stem)}
    missing = [p["index"] for p in prompts if p["index"] not in by_index]
    if missing:
        raise FileNotFoundError(f"{folder}: no image for {len(missing)} prompt(s), e.g. index {missing[0]} "
                                f"(expected {image_name(missing[0])})")
    return [np.asarray(Image.open(by_index[p["index"]]).convert("RGB")) for p in prompts]


def generate_missing(image_fn: Callable, prompts: Sequence[dict], folder: str | Path, batch_size: int = 8) -> int:
    """Sample images for prompts whose file is absent; write each batch at once. Returns how many."""
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [p for p in prompts if not (folder / image_name(p["index"])).is_file()]
    for start in tqdm(range(0, len(todo), batch_size), desc="t2i", unit="batch"):
        batch = todo[start:start + batch_size]
        images = image_fn([p["prompt"] for p in batch], [p["index"] for p in batch])
        for p, img in zip(batch, images):
            save_png(folder / image_name(p["index"]), np.asarray(img, dtype=np.uint8))
    return len(todo)


def save_png(path: Path, img: np.ndarray, text: dict[str, str] | None = None) -> None:
    """Written beside, then renamed: a killed run never leaves half a PNG (nor a name a scorer reads).
    The temporary name holds the process id, so two ranks writing the same file never collide.
    ``text``: compressed PNG text chunks (key -> value) stored in the file."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value, zip=True)
    encoded = io.BytesIO()
    Image.fromarray(img).save(encoded, format="PNG", pnginfo=info)
    write_atomic(path, encoded.getvalue())


def export_geneval(prompts: Sequence[dict], images: Sequence[np.ndarray], out: str | Path) -> Path:
    """GenEval layout: ``OUT/{index:05d}/metadata.jsonl`` + ``OUT/{index:05d}/samples/00000.png``."""
    out = Path(out)
    for p, img in zip(prompts, images):
        folder = out / f"{p['index']:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in p.items() if k != "index"}
        (folder / "metadata.jsonl").write_text(json.dumps(meta))
        Image.fromarray(img).save(folder / "samples" / "00000.png")
    return out


# -- GenEval and DPG-Bench: their prompts in, the folders their scorers read out ---------------
SEED_STRIDE = 1000  # sample k of prompt i is image_fn index i * SEED_STRIDE + k (seed --seed + that)
DPG_TILES = 4  # compute_dpg_bench.py crops (0,0), (R,0), (0,R), (R,R): a 2x2 grid of R x R tiles


@dataclass(frozen=True)
class BenchPrompt:
    """One prompt of GenEval (``name`` = ``{index:05d}``, ``metadata`` = its line as written) or
    DPG-Bench (``name`` = the file stem, ``metadata`` = "")."""
    index: int
    name: str
    prompt: str
    metadata: str
    source: str  # "file:line" or the file, for errors


def sample_index(index: int, k: int) -> int:
    """What image_fn gets for sample ``k`` of prompt ``index``: a pure function of the two."""
    return index * SEED_STRIDE + k


def read_geneval_metadata(path: str | Path) -> list[BenchPrompt]:
    """GenEval's ``evaluation_metadata.jsonl``: one JSON object with a str "prompt" a line; prompt
    ``i`` is the ``i``-th non-blank line (GenEval's generator enumerates the lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GenEval metadata file not found")
    rows = []
    for n, line in enumerate(read_utf8(path).split("\n"), 1):  # not splitlines: U+2028 may be in a string
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}:{n}: a GenEval metadata line needs a string \"prompt\"")
        rows.append(BenchPrompt(len(rows), f"{len(rows):05d}", row["prompt"], line, f"{path}:{n}"))
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def read_utf8(path: Path) -> str:
    """The file's text with universal newlines (GenEval's ``open()``); only ``\\n`` ends a line after."""
    try:
        with path.open(encoding="utf-8") as fp:
            return fp.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_dpg_prompts(folder: str | Path) -> list[BenchPrompt]:
    """DPG-Bench's ``prompts/*.txt``: one prompt a file (stripped), named by the file stem; prompt
    ``i`` is the ``i``-th file in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: DPG-Bench prompts folder not found")
    files = sorted(folder.glob("*.txt"), key=lambda f: f.name)
    if not files:
        raise ValueError(f"{folder}: no prompt files (*.txt); give ELLA's dpg_bench/prompts folder")
    rows = []
    for i, f in enumerate(files):
        if "." in f.stem:  # compute_dpg_bench.py keys an image by its name up to the first "."
            raise ValueError(f"{f}: a DPG-Bench prompt name may not contain '.' (the scorer cuts names there)")
        text = read_utf8(f).strip()
        if not text:
            raise ValueError(f"{f}: empty prompt")
        rows.append(BenchPrompt(i, f.stem, text, "", str(f)))
    return rows


def lazy_image_fn(make: Callable[[], Callable]) -> Callable:
    """An image_fn that builds the real one on its first call (a finished run loads no model)."""
    made: list[Callable] = []

    def image_fn(prompts: list[str], indices: list[int]) -> list:
        if not made:
            made.append(make())
        return made[0](prompts, indices)

    return image_fn


def draw_samples(image_fn: Callable, jobs: Sequence[tuple[BenchPrompt, int]], batch_size: int,
                 keep: Callable[[BenchPrompt, int, np.ndarray], None]) -> int:
    """Sample ``(prompt, k)`` jobs in batches; ``keep(prompt, k, uint8 [H,W,3])`` each. Returns how many."""
    from tqdm import tqdm

    for start in tqdm(range(0, len(jobs), batch_size), desc="t2i", unit="batch", disable=not jobs):
        batch = jobs[start:start + batch_size]
        images = image_fn([p.prompt for p, _ in batch], [sample_index(p.index, k) for p, k in batch])
        if len(images) != len(batch):
            raise ValueError(f"image_fn returned {len(images)} images for {len(batch)} prompts")
        for (p, k), img in zip(batch, images):
            img = np.asarray(img, dtype=np.uint8)
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image_fn returned an image of shape {img.shape} for {p.source}; "
                                 "expected [H, W, 3]")
            keep(p, k, img)
    return len(jobs)


def geneval_sample(out: Path, p: BenchPrompt, k: int) -> Path:
    return out / p.name / "samples" / f"{k:05d}.png"  # five digits, as diffusers_generate.py names them


def prepare_geneval_folder(out: Path, p: BenchPrompt, n_samples: int) -> None:
    """Write the prompt's ``metadata.jsonl`` (its line as written); a folder holding another
    prompt's metadata, or sample files GenEval would read beyond ours, is an error."""
    folder = out / p.name
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    meta = folder / "metadata.jsonl"
    if meta.is_file() and meta.read_text(encoding="utf-8") != p.metadata:
        raise ValueError(f"{meta} holds another prompt than {p.source}; use another --out")
    meta.write_text(p.metadata, encoding="utf-8")
    ours = {geneval_sample(out, p, k).name for k in range(n_samples)}
    for f in sorted((folder / "samples").iterdir()):
        if f.name.startswith(".") and f.name.endswith(TMP_SUFFIX):
            f.unlink()  # a killed run's half-written sample
        elif re.match(r"\d+\.png", f.name) and f.name not in ours:  # what evaluate_images.py reads
            raise ValueError(f"{f}: GenEval would score it, but --n-samples {n_samples} writes "
                             f"{min(ours)}..{max(ours)}; use that --n-samples or another --out")


def write_geneval(image_fn: Callable, prompts: Sequence[BenchPrompt], out: str | Path,
                  n_samples: int = 4, batch_size: int = 8) -> int:
    """GenEval's image folder: ``OUT/{i:05d}/metadata.jsonl``, ``samples/{k:05d}.png`` for
    ``k < n_samples``, ``grid.png``. Draws only the missing samples; returns how many it drew."""
    from unified_ar.commands.sample import make_grid

    if not 1 <= n_samples <= SEED_STRIDE:
        raise ValueError(f"--n-samples must be in 1..{SEED_STRIDE}, got {n_samples}")
    out = Path(out)
    for p in prompts:
        prepare_geneval_folder(out, p, n_samples)
    jobs = [(p, k) for p in prompts for k in range(n_samples) if not geneval_sample(out, p, k).is_file()]
    drawn = draw_samples(image_fn, jobs, batch_size, lambda p, k, img: save_png(geneval_sample(out, p, k), img))
    redo = {p.name for p, _ in jobs}
    for p in prompts:
        if p.name in redo or not (out / p.name / "grid.png").is_file():
            samples = [Image.open(geneval_sample(out, p, k)).convert("RGB") for k in range(n_samples)]
            make_grid(samples).save(out / p.name / "grid.png")  # a preview; the scorer reads samples/
    return drawn


def dpg_grid(tiles: Sequence[np.ndarray], source: str) -> np.ndarray:
    """The 2x2 grid compute_dpg_bench.py splits: tile k at row k // 2, column k % 2, no gaps."""
    size = tiles[0].shape[0]
    if any(t.shape != (size, size, 3) for t in tiles):
        raise ValueError(f"{source}: DPG-Bench tiles must be square and equal, got "
                         f"{[t.shape[:2] for t in tiles]}")
    grid = np.zeros((2 * size, 2 * size, 3), np.uint8)
    for k, tile in enumerate(tiles):
        row, col = divmod(k, 2)
        grid[row * size:(row + 1) * size, col * size:(col + 1) * size] = tile
    return grid


def write_dpg(image_fn: Callable, prompts: Sequence[BenchPrompt], out: str | Path, batch_size: int = 8) -> int:
    """DPG-Bench's image folder: ``OUT/{stem}.png``, a 2x2 grid of 4 samples. Draws the prompts
    whose grid is missing; returns how many samples it drew."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ours = tuple(f".{p.name}.png." for p in prompts)  # names hold no ".": no prefix is another's
    for f in out.glob(f".*{TMP_SUFFIX}"):
        if f.name.startswith(ours):  # another rank's prompts are its own to clean
            f.unlink()  # a killed run's half-written grid (compute_dpg_bench.py would try every file)
    jobs = [(p, k) for p in prompts if not (out / f"{p.name}.png").is_file() for k in range(DPG_TILES)]
    pending: dict[str, dict[int, np.ndarray]] = {}

    def keep(p: BenchPrompt, k: int, img: np.ndarray) -> None:
        tiles = pending.setdefault(p.name, {})
        tiles[k] = img
        if len(tiles) == DPG_TILES:
            save_png(out / f"{p.name}.png", dpg_grid([tiles[j] for j in range(DPG_TILES)], p.source))
            del pending[p.name]

    return draw_samples(image_fn, jobs, batch_size, keep)


def dpg_resolution(out: Path, prompts: Sequence[BenchPrompt]) -> int:
    """The tile size (compute_dpg_bench.py ``--resolution``) of the grids, which must all agree."""
    sizes = {}
    for p in prompts:
        with Image.open(out / f"{p.name}.png") as img:
            sizes.setdefault(img.size, p.name)
    if len(sizes) != 1 or any(w != h or w % 2 for w, h in sizes):
        raise ValueError(f"{out}: the grids differ in size or are not square: {sizes}")
    return next(iter(sizes))[0] // 2


def export_benchmark(args: argparse.Namespace) -> dict:
    """``--geneval-metadata`` / ``--dpg-prompts``: sample from ``--model`` into the scorer's folder."""
    from unified_ar.eval.model_adapter import load_image_fn

    geneval = bool(args.geneval_metadata)
    if args.dpg_prompts and args.n_samples not in (None, DPG_TILES):
        raise ValueError(f"--dpg-prompts writes 2x2 grids of {DPG_TILES} samples; --n-samples must be {DPG_TILES}")
    prompts = (read_geneval_metadata(args.geneval_metadata) if geneval else read_dpg_prompts(args.dpg_prompts))
    prompts = prompts[: args.limit]
    out = Path(args.out)
    folder = out / ("geneval" if geneval else "dpg")
    check_sampling_settings(folder, sampling_settings(args.model, args.cfg_scale, args.seed),
                            out / f"{folder.name}.{SETTINGS_NAME}")
    image_fn = lazy_image_fn(lambda: load_image_fn(args.model, args.cfg_scale, args.seed, args.device))
    n = args.n_samples or DPG_TILES
    metrics: dict = {"benchmark": "geneval" if geneval else "dpg_bench",
                     "prompts": args.geneval_metadata or args.dpg_prompts, "num_prompts": len(prompts),
                     "samples_per_prompt": n, "num_images": len(prompts) * n, "images": str(folder),
                     "cfg_scale": args.cfg_scale, "seed": args.seed}
    if geneval:
        metrics["drawn"] = write_geneval(image_fn, prompts, folder, n, args.batch_size)
        metrics["score_with"] = (f"python evaluation/evaluate_images.py {folder} --outfile "
                                 f"{out / 'geneval_results.jsonl'} --model-path OBJECT_DETECTOR_FOLDER")
    else:
        metrics["drawn"] = write_dpg(image_fn, prompts, folder, args.batch_size)
        metrics["resolution"] = dpg_resolution(folder, prompts)
        metrics["score_with"] = f"bash dpg_bench/dist_eval.sh {folder} {metrics['resolution']}"
    return metrics


def toklip_score(model, tokenize: Callable[[str], list[int]], images: Sequence[np.ndarray],
                 prompts: Sequence[str], image_size: int | None = None) -> float:
    """Mean cosine similarity of TokLIP pooled image and text embeddings.

    ``model.encode_image(pixels [1,3,H,W] in [-1,1])`` returns pooled [1,D] (or
    ``(tokens, pooled)``); ``model.encode_text(ids [1,L]) -> [1,D]``. One prompt at a
    time, so no padding enters the text tower."""
    import torch

    from unified_ar.tokenizer.transforms import image_pixels, to_tensor

    sims = []
    with torch.inference_mode():
        for img, text in zip(images, prompts):
            pil = Image.fromarray(img)
            pixels = (image_pixels(pil, image_size) if image_size is not None else to_tensor(pil))[None]
            pooled = model.encode_image(pixels)
            pooled = pooled[1] if isinstance(pooled, tuple) else pooled
            text_emb = model.encode_text(torch.tensor([tokenize(text)], dtype=torch.long))
            sims.append(float(torch.nn.functional.cosine_similarity(pooled.float(), text_emb.float()).mean()))
    return sum(sims) / len(sims)


def load_toklip(toklip_dir: str, tokenizer_dir: str):
    """(TokLIP model, tokenize function) from local folders."""
    try:
        from unified_ar.tokenizer.toklip import TokLIP
    except ModuleNotFoundError as e:
        if e.name != "unified_ar.tokenizer.toklip":
            raise
        raise RuntimeError("--toklip needs unified_ar/tokenizer/toklip.py, which is not in this checkout yet") from None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return TokLIP.from_pretrained(toklip_dir).eval(), lambda s: tokenizer(s)["input_ids"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unified-ar eval-t2i", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    prompts = p.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompts", help="JSONL of {index, prompt, spec}")
    prompts.add_argument("--geneval-metadata", metavar="FILE",
                         help="GenEval's evaluation_metadata.jsonl: sample --model into OUT/geneval/")
    prompts.add_argument("--dpg-prompts", metavar="DIR",
                         help="DPG-Bench's prompts/ folder of *.txt: sample --model into OUT/dpg/")
    p.add_argument("--n-samples", type=int, default=None,
                   help="samples per prompt for --geneval-metadata (default 4; --dpg-prompts: 4)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of NNNN.png images, one per prompt index")
    src.add_argument("--model", help="model directory to sample the images from")
    src.add_argument("--render", action="store_true",
                     help="judge the world's own renders of each spec (the judge's self-check: 1.0)")
    p.add_argument("--shuffle-seed", type=int, default=None,
                   help="permute the images across prompts first (a wrong-image control)")
    p.add_argument("--out", default="eval_out/t2i", help="output folder")
    p.add_argument("--world", default=None, help="world.json (default: beside the prompts file)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance (model mode; default: the model folder's generation_config.json)")
    p.add_argument("--seed", type=int, default=0,
                   help="prompt i is sampled with seed + index (GenEval / DPG sample k of prompt i: seed + 1000 i + k)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (model mode)")
    p.add_argument("--geneval-out", default=None, help="also export the GenEval folder layout here")
    p.add_argument("--toklip", default=None, help="TokLIP model folder: report the TokLIP score")
    p.add_argument("--text-tokenizer", default=None, help="text tokenizer folder for --toklip")
    p.add_argument("--fid-ref", default=None, help="reference image folder: report FID")
    p.add_argument("--fid-extractor", default=None, help="TorchScript feature extractor file for FID")
    return p


def _images(args: argparse.Namespace, prompts: list[dict], out: Path) -> tuple[list[np.ndarray], Path]:
    if args.render:
        from unified_ar.train.shapes.world import Scene, render

        world = world_config(args.prompts, args.world)
        folder = out / "renders"
        folder.mkdir(parents=True, exist_ok=True)
        images = [render(Scene.from_dict(p["spec"]), world) for p in prompts]
        for p, img in zip(prompts, images):
            Image.fromarray(img).save(folder / image_name(p["index"]))
        return images, folder
    if args.images:
        return read_images(args.images, prompts), Path(args.images)
    from unified_ar.eval.model_adapter import load_image_fn

    folder = out / "images"
    check_sampling_settings(folder, sampling_settings(args.model, args.cfg_scale, args.seed))
    generate_missing(load_image_fn(args.model, args.cfg_scale, args.seed, args.device), prompts, folder,
                     args.batch_size)
    return read_images(folder, prompts), folder


SETTINGS_NAME = "sampling.json"


def sampling_settings(model_dir: str | Path, cfg_scale: float, seed: int) -> dict:
    """What the images in ``OUT/images`` were sampled with: the model directory, its weight files
    (name, size, mtime) so a retrained model in the same place counts as another, guidance, seed."""
    model = Path(model_dir).resolve()
    weights = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(model.glob("*.safetensors"))}
    return {"model": str(model), "weights": weights, "cfg_scale": cfg_scale, "seed": seed}


def check_sampling_settings(folder: Path, settings: dict, path: Path | None = None) -> None:
    """A resumed run keeps the images already drawn, so they must come from the same settings:
    a folder sampled otherwise is an error naming what differs (nothing is deleted). The record
    is ``path`` (default ``folder/sampling.json``)."""
    path = path or folder / SETTINGS_NAME
    if path.is_file():
        saved = json.loads(path.read_text())
        differ = [k for k in settings if saved.get(k) != settings[k]]
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} there, {settings[k]!r} now" for k in differ
                              if k != "weights") or "the model's weight files changed"
            raise ValueError(f"{folder} holds images sampled with other settings ({shown}); "
                             f"use another --out or delete {folder}")
    elif folder.is_dir() and any(folder.rglob("*.png")):
        raise ValueError(f"{folder} holds images but no {path.name} (at {path}): their settings are unknown; "
                         f"use another --out or delete {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(settings, indent=1) + "\n")  # ranks starting together read it whole


EXPORT_ONLY_WITH_PROMPTS = ("images", "render", "shuffle_seed", "world", "geneval_out", "toklip", "fid_ref")


def check_export_args(args: argparse.Namespace) -> None:
    """--geneval-metadata / --dpg-prompts sample from --model and score nothing here."""
    flag = "--geneval-metadata" if args.geneval_metadata else "--dpg-prompts"
    given = [name for name in EXPORT_ONLY_WITH_PROMPTS if getattr(args, name) is not None
             and getattr(args, name) is not False]  # 0 is given (--shuffle-seed 0)
    if given:
        raise ValueError(f"{flag} samples --model DIR into the benchmark's folder; "
                         f"--{given[0].replace('_', '-')} goes with --prompts")


def evaluate(args: argparse.Namespace) -> dict:
    from unified_ar.eval.shapes_eval import evaluate_images

    if args.geneval_metadata or args.dpg_prompts:
        check_export_args(args)
        return export_benchmark(args)
    if args.n_samples is not None:
        raise ValueError("--n-samples goes with --geneval-metadata (one image per --prompts index)")
    prompts = read_prompts(args.prompts)[: args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, folder = _images(args, prompts, out)
    metrics: dict = {"prompts": args.prompts, "images": str(folder), "num_images": len(images)}
    if args.shuffle_seed is not None:
        order = np.random.default_rng(args.shuffle_seed).permutation(len(images))
        images = [images[i] for i in order]
        metrics["shuffled_with_seed"] = args.shuffle_seed
    if all("spec" in p for p in prompts):
        result = evaluate_images(images, [p["spec"] for p in prompts], world_config(args.prompts, args.world))
        metrics["shapes_eval"] = result.summary()
        (out / "shapes_eval.jsonl").write_text("".join(
            json.dumps({"index": p["index"], **r}) + "\n" for p, r in zip(prompts, result.per_image)))
    if args.toklip:
        if not args.text_tokenizer:
            raise ValueError("--toklip needs --text-tokenizer DIR (the tokenizer of its text tower)")
        model, tokenize = load_toklip(args.toklip, args.text_tokenizer)
        size = getattr(getattr(model, "config", None), "image_size", None)
        metrics["toklip_score"] = toklip_score(model, tokenize, images, [p["prompt"] for p in prompts], size)
    if args.fid_ref:
        from unified_ar.eval.fid import fid_folders

        metrics["fid"] = fid_folders(folder, args.fid_ref, args.fid_extractor, args.batch_size)
    if args.geneval_out:
        metrics["geneval_export"] = str(export_geneval(prompts, images, args.geneval_out))
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fid_extractor and not args.fid_ref:
        print("eval-t2i: --fid-extractor needs --fid-ref DIR", file=sys.stderr)
        return 2
    try:
        if args.model is not None and args.cfg_scale is None:
            from unified_ar.generation_config import GenerationConfig

            args.cfg_scale = GenerationConfig.load(args.model).image.guidance_scale
        metrics = evaluate(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"unified-ar eval-t2i: {e}", file=sys.stderr)
        return 2
    from unified_ar.eval.vqa_runner import metrics_markdown

    out = Path(args.out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    title = (f"{metrics['benchmark']} export ({metrics['num_prompts']} prompts)" if "benchmark" in metrics
             else f"text-to-image ({metrics['num_images']} prompts)")
    (out / "metrics.md").write_text(metrics_markdown(metrics, title))
    print(json.dumps(metrics, indent=1))
    return 0
