"""FID between two image folders, with a local feature extractor.

The Fréchet distance between Gaussians fitted to two feature sets is

    ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)),

where ``tr((S1 S2)^(1/2))`` equals the sum of the square roots of the
eigenvalues of the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)``; both square
roots come from ``torch.linalg.eigh`` in float64 (no scipy ``sqrtm``).

The network is not defined here: ``--fid-extractor`` is a TorchScript file
(``torch.jit.save``) that maps float32 images [B, 3, H, W] in [0, 1] to
features [B, D] and does its own resizing and normalisation, e.g. pytorch-fid's
``InceptionV3([3])`` (pool3, 2048-d, ``resize_input=True``,
``normalize_input=True``) traced once on a machine that has its weights. FID
values are comparable across papers only with that pt_inception network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D], N >= 2."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N>=2, D], got shape {tuple(features.shape)}")
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    # Symmetrise first: round-off makes covariances very slightly asymmetric.
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2); mu [D], sigma [D, D]."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(),) * 2:
        raise ValueError("frechet_distance: mean / covariance shapes do not match")
    root = _psd_sqrt(sigma1)
    inner = root @ sigma2 @ root
    eig = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0)
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2 * eig.sqrt().sum())


def load_extractor(path: str | Path | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The TorchScript feature extractor at ``path``; a clear error when there is none."""
    if path is None:
        raise ValueError("FID needs a local feature extractor: pass --fid-extractor FILE, a TorchScript module "
                         "mapping images [B,3,H,W] in [0,1] to features [B,D] (see eval/fid.py)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--fid-extractor {path}: file not found")
    module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"{folder}: FID needs at least 2 images, found {len(files)}")
    return files


@torch.inference_mode()
def folder_features(folder: str | Path, extractor: Callable, batch_size: int = 32) -> torch.Tensor:
    """Features [N, D] of every image under ``folder`` (images of one size per batch)."""
    files = image_files(folder)
    feats = []
    for i in range(0, len(files), batch_size):
        arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in files[i:i + batch_size]]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        out = extractor(batch)
        feats.append(out.reshape(out.shape[0], -1).double())
    return torch.cat(feats)


def fid_folders(generated: str | Path, reference: str | Path, extractor_path: str | Path | None,
                batch_size: int = 32) -> float:
    """FID between the images of two folders."""
    extractor = load_extractor(extractor_path)
    stats_g = gaussian_stats(folder_features(generated, extractor, batch_size))
    stats_r = gaussian_stats(folder_features(reference, extractor, batch_size))
    return frechet_distance(*stats_g, *stats_r)
