"""``unified-ar pretokenize``: encode every image of some data files to VQ codes, once.

    unified-ar pretokenize --vq VQ_DIR --image-size 96 --out CODES_DIR \
        DATA/captions_train.jsonl DATA/conversations_train.json [--image-root DATA]

Reads the ``image`` field of caption JSONL / parquet rows and LLaVA records, encodes
each distinct image with ``VQModel.encode`` and writes sharded parquet files
``CODES_DIR/codes-00000.parquet`` (columns ``image``: the path as written in the
data, ``codes``: ``int32 [h*w]`` row-major, ``height``/``width``: the code grid) plus
``CODES_DIR/pretokenize.json`` (VQ, image size, counts, images that failed).
Training then reads codes through :func:`unified_ar.train.data.sources.load_code_table`.
Unreadable or missing images are skipped, counted and named (the first few).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

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
        for image in rows["image"]:
            if isinstance(image, str) and image:
                seen.setdefault(image, None)
    return list(seen)


def encode_images(vq, paths: list[str], root: Path, image_size: int, batch_size: int,
                  failures: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """Codes ``int32 [h*w]`` of each readable image; unreadable ones go to ``failures``."""
    from unified_ar.tokenizer.transforms import load_image

    done, codes = [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="pretokenize", unit="batch"):
        names, pixels = [], []
        for name in paths[start:start + batch_size]:
            try:
                pixels.append(load_image(root / name, image_size))
                names.append(name)
            except (OSError, ValueError) as error:  # missing, truncated or non-image file
                failures.append(f"{root / name}: {error}")
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


def pretokenize(vq_path: str, files: list[Path], out: Path, image_size: int, image_root: Path | None = None,
                batch_size: int = 64, shard_size: int = 50_000, max_bad_fraction: float = 0.01,
                device: str = "auto") -> dict:
    """Encode the images of ``files`` on ``device``; return the summary written to ``out/pretokenize.json``."""
    from unified_ar.devices import resolve_device
    from unified_ar.tokenizer.vq import VQModel

    vq = VQModel.from_pretrained(vq_path).to(resolve_device(device)).eval()
    root = image_root or files[0].parent
    paths = image_paths(files)
    failures: list[str] = []
    names, codes = encode_images(vq, paths, root, image_size, batch_size, failures)
    if paths and len(failures) > max_bad_fraction * len(paths):
        raise RuntimeError(f"{len(failures)} of {len(paths)} images failed (> {max_bad_fraction:.1%}); "
                           f"first: {'; '.join(failures[:5])}")
    shards = write_shards(out, names, codes, vq.grid_size(image_size), shard_size)
    summary = {"vq": str(vq_path), "image_size": image_size, "grid": vq.grid_size(image_size),
               "images": len(names), "failed": len(failures), "first_failures": failures[:10],
               "shards": [p.name for p in shards], "files": [str(f) for f in files]}
    (out / "pretokenize.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unified-ar pretokenize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="caption JSONL/parquet or LLaVA JSON files")
    parser.add_argument("--vq", required=True, help="VQ directory (save_pretrained)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--image-root", type=Path, default=None, help="default: the first file's folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--max-bad-fraction", type=float, default=0.01)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = parser.parse_args(argv)
    summary = pretokenize(args.vq, args.files, args.out, args.image_size, args.image_root, args.batch_size,
                          args.shard_size, args.max_bad_fraction, args.device)
    print(f"pretokenize: {summary['images']} images -> {len(summary['shards'])} shard(s) in {args.out} "
          f"(grid {summary['grid']}x{summary['grid']}, {summary['failed']} failed)")
    for failure in summary["first_failures"][:5]:
        print(f"  failed: {failure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
