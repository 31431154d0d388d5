"""Image <-> tensor conversions shared by the VQ and TokLIP models.

Both models take pixels in [-1, 1] (LlamaGen's and TokLIP's convention), so
every path from a PIL image or a uint8 array goes through ``to_tensor`` and every
path back through ``to_uint8`` / ``to_pil``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic), then centre-crop to ``size`` x ``size``.

    An image already of that size is returned unchanged, so the Shapes world's
    unantialiased renders keep their exact pixel values."""
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) == (size, size):
        return image
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """PIL image or uint8 [H, W, 3] array -> float32 [3, H, W] in [-1, 1]."""
    array = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got dtype {array.dtype} shape {array.shape}")
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float()
    return tensor / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[3, H, W] or [B, 3, H, W] in [-1, 1] -> uint8 [H, W, 3] or [B, H, W, 3] (clamped, rounded)."""
    if pixels.dim() not in (3, 4) or pixels.shape[-3] != 3:
        raise ValueError(f"expected [3,H,W] or [B,3,H,W] pixels, got shape {tuple(pixels.shape)}")
    scaled = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.movedim(-3, -1).cpu().numpy()


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> PIL RGB image."""
    if pixels.dim() != 3:
        raise ValueError(f"expected [3,H,W] pixels, got shape {tuple(pixels.shape)}")
    return Image.fromarray(to_uint8(pixels))


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read an image file, resize/centre-crop to ``size``, return [3, size, size] in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    with Image.open(path) as image:
        return to_tensor(resize_center_crop(image, size))
