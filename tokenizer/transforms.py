"""Image <-> tensor conversions shared by the VQ and TokLIP models.

Both models take pixels in [-1, 1] (LlamaGen's and TokLIP's convention), so
every path from a PIL image or a uint8 array goes through ``to_tensor`` and every
path back through ``to_uint8`` / ``to_pil``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> RGB as a viewer shows it: EXIF orientation applied (as transformers'
    ``load_image`` does), transparency composited onto white (transformers' ``convert_to_rgb``),
    grayscale, palette and CMYK converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """The image rule: :func:`to_rgb`, resize the short side to ``size`` (bicubic), then
    centre-crop to ``size`` x ``size`` (LlamaGen's and TokLIP's training transform). Every path
    from a picture to the model (pretokenize, training, evaluation, chat, sample) goes through it.

    An image already of that size is returned unchanged, so the Shapes world's
    unantialiased renders keep their exact pixel values."""
    image = to_rgb(image)
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


def image_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image under the image rule (:func:`resize_center_crop`) -> [3, size, size] in [-1, 1]."""
    return to_tensor(resize_center_crop(image, size))


def open_image(path: str | Path) -> Image.Image:
    """Read an image file fully (so a truncated file fails here, naming it). Raises
    ``FileNotFoundError`` or ``ValueError`` with the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:  # PIL's errors for bad files
        raise ValueError(f"{path}: unreadable image: {error}") from None


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read an image file under the image rule: [3, size, size] in [-1, 1]."""
    return image_pixels(open_image(path), size)
