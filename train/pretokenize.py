"""``unified-ar pretokenize``: encode every image of some data files to VQ codes, once.

    unified-ar pretokenize --config STAGE.yaml            # the stage's VQ, image size, sources, data.codes
    unified-ar pretokenize --vq VQ --image-size 96 --out CODES_DIR \
        DATA/captions_train.jsonl DATA/conversations_train.json [--image-root DATA] [--vq-preset VQ-16]

Reads the ``image`` field of caption JSONL / parquet rows and LLaVA records (records without
one, text-only conversations, are skipped), encodes each distinct image under the image rule
(:mod:`unified_ar.processor`) with ``VQModel.encode`` and writes sharded parquet files
``CODES_DIR/codes-00000.parquet`` (columns ``image``: the path as written in the
data, ``codes``: ``int32 [h*w]`` row-major, ``height``/``width``: the code grid),
``CODES_DIR/processor_config.json`` (the image rule, the grid and the VQ's weight hash: training
refuses codes of another VQ) and ``CODES_DIR/pretokenize.json`` (counts, images that failed).
``--vq`` is our VQ directory or an official LlamaGen ``.pt`` (with ``--vq-preset``); with
``--config`` the stage's ``model.vq`` (preset, path, overrides) is used, so the codes are the
model's by construction. Unreadable or missing images are skipped, counted and named.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unified_ar.config import ConfigError
from unified_ar.devices import DEVICE_HELP
from unified_ar.train.data.sources import load_rows

SHARD_PATTERN = "codes-{:05d}.parquet"


def image_paths(files: list[Path]) -> list[str]:
    """Distinct ``image`` fields of the rows of ``files``, in first-seen order."""
    seen: dict[str, None] = {}
    for file in files:
        rows = load_rows(file)
        if "image" not in rows.column_names:
            raise ValueError(f"{file}: no 'image' column (columns: {', '.join(rows.column_names)})")
        for image in rows["image"]:  # None: a text-only record
            if isinstance(image, str) and image:
                seen.setdefault(image, None)
    return list(seen)


def encode_images(vq, processor, paths: list[str], root: Path, batch_size: int,
                  failures: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """Codes ``int32 [h*w]`` of each readable image; unreadable ones go to ``failures``."""
    done, codes = [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="pretokenize", unit="batch"):
        names, pixels = [], []
        for name in paths[start:start + batch_size]:
            try:
                pixels.append(processor.pixels(root / name))
                names.append(name)
            except (OSError, ValueError) as error:  # missing, truncated or non-image file
                failures.append(str(error))
        if not pixels:
            continue
        with torch.no_grad():
            batch_codes = vq.encode(torch.stack(pixels).to(vq.quant_conv.weight.device))
        batch_codes = batch_codes.flatten(1).to(torch.int32).cpu().numpy()
        done.extend(names)
        codes.extend(batch_codes)
    return done, codes


def write_shards(out: Path, names: list[str], codes: list[np.ndarray], grid: int, shard_size: int) -> list[Path]:
    import datasets

    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, start in enumerate(range(0, len(names), shard_size)):
        part = slice(start, start + shard_size)
        table = datasets.Dataset.from_dict({
            "image": names[part], "codes": [c.tolist() for c in codes[part]],
            "height": [grid] * len(names[part]), "width": [grid] * len(names[part]),
        }, features=datasets.Features({
            "image": datasets.Value("string"), "codes": datasets.Sequence(datasets.Value("int32")),
            "height": datasets.Value("int32"), "width": datasets.Value("int32"),
        }))
        path = out / SHARD_PATTERN.format(i)
        table.to_parquet(str(path))
        shards.append(path)
    return shards


def load_vq(part, device: str = "auto"):
    """The VQ of a ``PartConfig`` (preset / path / overrides), as the unified model builds it, in eval mode."""
    from unified_ar.devices import resolve_device
    from unified_ar.modeling import build_vq

    return build_vq(part, "cpu").to(resolve_device(device)).eval()


def image_processor(vq, image_size: int):
    """The image-only :class:`~unified_ar.processor.UnifiedARProcessor` of ``vq`` at ``image_size``."""
    from unified_ar.processor import ImageSpec, UnifiedARProcessor

    spec = ImageSpec(image_size, vq.grid_size(image_size), vq.config.codebook_size, vq.weights_sha256())
    return UnifiedARProcessor(spec)


def pretokenize(vq, files: list[Path], out: Path, image_size: int, image_root: Path | None = None,
                batch_size: int = 64, shard_size: int = 50_000, max_bad_fraction: float = 0.01) -> dict:
    """Encode the images of ``files`` with ``vq`` (a ``VQModel`` on its device); return the summary
    written to ``out/pretokenize.json``. Raises ``RuntimeError`` when too many images fail."""
    processor = image_processor(vq, image_size)
    root = image_root or files[0].parent
    paths = image_paths(files)
    failures: list[str] = []
    names, codes = encode_images(vq, processor, paths, root, batch_size, failures)
    if paths and len(failures) > max_bad_fraction * len(paths):
        raise RuntimeError(f"{len(failures)} of {len(paths)} images failed (> {max_bad_fraction:.1%}, "
                           f"--max-bad-fraction); first: {'; '.join(failures[:5])}")
    shards = write_shards(out, names, codes, processor.image.grid, shard_size)
    processor.save_pretrained(out)
    summary = {"vq_sha256": processor.image.vq_sha256, "image_size": image_size, "grid": processor.image.grid,
               "images": len(names), "failed": len(failures), "first_failures": failures[:10],
               "shards": [p.name for p in shards], "files": [str(f) for f in files]}
    (out / "pretokenize.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _from_stage_config(args, overrides: list[str]):
    """``--config STAGE.yaml``: the stage's VQ, image size, image sources, image root and data.codes."""
    from unified_ar.config import load_config
    from unified_ar.train.stage_unified import StageConfig

    config = load_config(StageConfig, args.config, overrides)
    if config.data.codes is None:
        raise ConfigError(f"{args.config}: data.codes is not set: where should the codes go?")
    files = args.files or [Path(s.path) for s in config.data.sources if s.kind in ("captions", "conversations")]
    root = args.image_root or (Path(config.data.image_root) if config.data.image_root else None)
    return config.model.vq, files, Path(args.out or config.data.codes), config.model.image_size, root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unified-ar pretokenize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="caption JSONL/parquet or LLaVA JSON files")
    parser.add_argument("--config", default=None, help="a stage YAML: its model.vq, model.image_size, "
                        "data.sources, data.image_root and data.codes (dotted overrides may follow)")
    parser.add_argument("--vq", default=None, help="VQ directory (save_pretrained) or official LlamaGen .pt")
    parser.add_argument("--vq-preset", default=None, help="preset of an official .pt (e.g. VQ-16)")
    parser.add_argument("--out", default=None, type=Path)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--image-root", type=Path, default=None, help="default: the first file's folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--max-bad-fraction", type=float, default=0.01)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    return parser


def _resolve(args, overrides: list[str]):
    """(VQ part config, files, out, image size, image root) from the command line."""
    from unified_ar.modeling import PartConfig

    if args.config is not None:
        if args.vq is not None or args.image_size is not None:
            raise ConfigError("give --config or --vq/--image-size, not both")
        return _from_stage_config(args, overrides)
    if overrides:
        raise ConfigError(f"unknown arguments {' '.join(overrides)} (dotted overrides need --config)")
    missing = [flag for flag, value in (("--vq", args.vq), ("--out", args.out), ("--image-size", args.image_size))
               if value is None]
    if missing or not args.files:
        raise ConfigError(f"without --config give data files and {', '.join(missing) or 'them'}")
    return PartConfig(preset=args.vq_preset, path=args.vq), args.files, args.out, args.image_size, args.image_root


def main(argv: list[str] | None = None) -> int:
    args, overrides = _parser().parse_known_args(argv)
    try:
        part, files, out, image_size, root = _resolve(args, overrides)
        vq = load_vq(part, args.device)
        summary = pretokenize(vq, files, out, image_size, root, args.batch_size, args.shard_size,
                              args.max_bad_fraction)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"unified-ar pretokenize: {error}", file=sys.stderr)
        return 2
    print(f"pretokenize: {summary['images']} images -> {len(summary['shards'])} shard(s) in {out} "
          f"(grid {summary['grid']}x{summary['grid']}, {summary['failed']} failed)")
    for failure in summary["first_failures"][:5]:
        print(f"  failed: {failure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
