"""``UnifiedARProcessor``: the one owner of what turns user inputs into model inputs.

It holds, and saves into every model folder (``processor_config.json`` plus the tokenizer's
files, transformers' processor conventions):

- the text tokenizer with the image special tokens (:mod:`unified_ar.vocab`) and the
  vocabulary layout read from it (special ids come from the tokenizer; no BOS where the
  tokenizer has none);
- the image rule (:func:`unified_ar.tokenizer.transforms.resize_center_crop`: RGB as a viewer
  shows it, short side to ``image_size``, centre crop), used by pretokenize, training,
  evaluation, chat and sample alike;
- the prompt layouts (:mod:`unified_ar.sequences`) bound to that tokenizer;
- the identity of the VQ whose codes the model reads and writes: the SHA-256 of its weights
  (:func:`unified_ar.tokenizer.vq.weights_sha256`). ``unified-ar pretokenize`` saves an
  image-only processor (no tokenizer) beside the codes it writes, and training refuses codes
  whose VQ or image rule differ from the model's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PROCESSOR_CONFIG = "processor_config.json"
IMAGE_RULE = "rgb-exif-alpha-on-white/shorter-side-bicubic/center-crop"  # names resize_center_crop's rule


class ProcessorMismatch(ValueError):
    """Codes or a model folder were made with another VQ or image rule than the one in use."""


@dataclass(frozen=True)
class ImageSpec:
    """What the model's image side is: the image rule's size, the code grid, the VQ's identity."""

    image_size: int
    grid: int  # codes per side: image_size / the VQ's downsampling factor
    codebook_size: int
    vq_sha256: str | None  # None only while a model is being built (weights not yet final)
    image_rule: str = IMAGE_RULE

    @property
    def num_image_tokens(self) -> int:
        return self.grid * self.grid

    def to_json(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "grid": self.grid, "codebook_size": self.codebook_size,
                "vq_sha256": self.vq_sha256, "image_rule": self.image_rule}

    @classmethod
    def from_json(cls, data: dict, source: str) -> "ImageSpec":
        keys = ("image_size", "grid", "codebook_size", "vq_sha256", "image_rule")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ProcessorMismatch(f"{source}: missing key(s) {', '.join(missing)}")
        return cls(**{k: data[k] for k in keys})

    def check_same(self, other: "ImageSpec", what: str, fix: str) -> None:
        """Raise :class:`ProcessorMismatch` naming every field in which ``other`` (``what``) differs."""
        differ = [f"{k}: {what} {v!r}, this model {getattr(self, k)!r}"
                  for k, v in other.to_json().items() if v != getattr(self, k)]
        if differ:
            raise ProcessorMismatch(f"{what} differs from the model's VQ / image rule ({'; '.join(differ)}); {fix}")


class UnifiedARProcessor:
    """Tokenizer + image rule + vocabulary layout + VQ identity. Build with the model
    (``model.processor``) or :meth:`from_pretrained`; ``tokenizer=None`` is an image-only
    processor (the one ``pretokenize`` writes beside its codes)."""

    def __init__(self, image: ImageSpec, tokenizer=None):
        from unified_ar.vocab import VocabLayout

        self.image = image
        self.tokenizer = tokenizer
        self.layout = VocabLayout.from_tokenizer(tokenizer, image.codebook_size) if tokenizer is not None else None

    @property
    def num_image_tokens(self) -> int:
        return self.image.num_image_tokens

    # -- images -----------------------------------------------------------------------------
    def pixels(self, image) -> torch.Tensor:
        """A PIL image or an image file path -> pixels [3, S, S] in [-1, 1] under the image rule."""
        from PIL import Image

        from unified_ar.tokenizer.transforms import image_pixels, open_image

        if not isinstance(image, Image.Image):
            image = open_image(image)
        return image_pixels(image, self.image.image_size)

    # -- text -------------------------------------------------------------------------------
    def _text(self):
        if self.tokenizer is None:
            raise ValueError("this processor is image-only (no tokenizer); load a model folder's processor")
        return self.layout, self.tokenizer

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        """Prompt ids for the next assistant turn; ``<image>`` in a user turn places an image."""
        from unified_ar.sequences import chat_prompt

        return chat_prompt(*self._text(), messages, self.num_image_tokens)

    def generation_prompt(self, caption: str | None) -> list[int]:
        """Prompt ids for text-to-image (``None``: the unconditional prompt)."""
        from unified_ar.sequences import generation_prompt

        return generation_prompt(*self._text(), caption)

    def text_ids(self, text: str) -> list[int]:
        """A plain-text training sample: ``[bos] text eos``, the bos only where the tokenizer has one."""
        from unified_ar.sequences import text_example

        return text_example(*self._text(), text).input_ids

    def decode(self, ids: list[int]) -> str:
        return self._text()[1].decode(ids, skip_special_tokens=True).strip()

    # -- save / load ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``processor_config.json`` (and the tokenizer's files, if any) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = {"processor_class": type(self).__name__, **self.image.to_json(),
                "has_tokenizer": self.tokenizer is not None}
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(data, indent=2) + "\n")
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
        return directory

    @staticmethod
    def _read_config(directory: str | Path) -> tuple[dict, ImageSpec]:
        """``processor_config.json`` of ``directory`` (a model folder or a codes folder) and its spec."""
        path = Path(directory) / PROCESSOR_CONFIG
        if not path.is_file():
            raise ProcessorMismatch(f"{path}: not found (a folder written by an older version, or not a "
                                    "model / pretokenize output)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ProcessorMismatch(f"{path}: invalid JSON: {error}") from None
        return data, ImageSpec.from_json(data, str(path))

    @classmethod
    def read_image_spec(cls, directory: str | Path) -> ImageSpec:
        """The :class:`ImageSpec` saved in ``directory`` (a model folder or a codes folder)."""
        return cls._read_config(directory)[1]

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "UnifiedARProcessor":
        """Load a :meth:`save_pretrained` directory (no network)."""
        directory = Path(directory)
        data, spec = cls._read_config(directory)
        tokenizer = None
        if data.get("has_tokenizer", False):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return cls(spec, tokenizer)

    def check_codes(self, codes_dir: str | Path) -> None:
        """Refuse pretokenized codes made by another VQ or at another image size / rule."""
        theirs = self.read_image_spec(codes_dir)
        self.image.check_same(theirs, f"data.codes {codes_dir}",
                              "re-run `unified-ar pretokenize` with the model's VQ and image size")
