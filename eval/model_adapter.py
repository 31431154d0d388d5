"""The model side of evaluation: turn a model directory into ``answer_fn`` / ``image_fn``.

Evaluation only needs two callables:

* ``answer_fn(list[VQASample]) -> list[str]`` (greedy short answers), for ``eval-vqa``;
* ``image_fn(prompts, indices) -> list[np.ndarray uint8 [H, W, 3]]`` (one image per prompt), for ``eval-t2i``.

They wrap ``answer_questions`` / ``generate_images`` of ``unified_ar/sampling.py``
(another part of the project) around ``UnifiedARModel.from_pretrained``, imported lazily so that the metrics and the
score-only paths work without a model. Until that module exists, asking for a
model is a clear error.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

SAMPLING_MODULE = "unified_ar.sampling"


def _sampling() -> Any:
    try:
        return importlib.import_module(SAMPLING_MODULE)
    except ModuleNotFoundError as e:
        if e.name != SAMPLING_MODULE:
            raise
        raise RuntimeError(
            f"evaluating a model needs {SAMPLING_MODULE} (the unified model's batched samplers), which is "
            "not in this checkout yet; score an existing predictions file with --predictions, or an "
            "images folder with eval-t2i --images") from None


def _require(module: Any, name: str) -> Callable:
    fn = getattr(module, name, None)
    if fn is None:
        raise RuntimeError(f"{module.__name__} has no {name}(); eval/model_adapter.py needs it")
    return fn


def load_model(model_dir: str, device: str = "auto"):
    """``UnifiedARModel.from_pretrained(model_dir)`` on ``device`` (``--device``), in eval mode."""
    from unified_ar.devices import resolve_device
    from unified_ar.modeling import UnifiedARModel

    return UnifiedARModel.from_pretrained(model_dir, device=resolve_device(device)).eval()


def load_answer_fn(model_dir: str, max_new_tokens: int = 16, device: str = "auto") -> Callable:
    """``answer_fn`` for ``model_dir``: greedy answers of at most ``max_new_tokens`` tokens."""
    answer_questions = _require(_sampling(), "answer_questions")
    model = load_model(model_dir, device)

    def answer_fn(batch: list) -> list[str]:
        # a list of images (MMMU) keeps its prompt's <image> markers; one image gets the VQA template
        images = [s.load_images() if isinstance(s.image, list) else s.load_image() for s in batch]
        text_only = [s.question_id for s, img in zip(batch, images) if img is None or img == []]
        if text_only:
            raise ValueError(f"questions without an image are not supported by the unified model: {text_only[:3]}")
        return answer_questions(model, images, [s.prompt for s in batch], max_new_tokens=max_new_tokens,
                                batch_size=len(batch))

    return answer_fn


def load_image_fn(model_dir: str, cfg_scale: float | None, seed: int = 0, device: str = "auto") -> Callable:
    """``image_fn(prompts, indices)`` for ``model_dir``; prompt ``indices[i]`` is sampled with seed
    ``seed + indices[i]``, so a resumed or re-batched run draws the same images."""
    import numpy as np

    sampling = _sampling()
    generate_images = _require(sampling, "generate_images")
    model = load_model(model_dir, device)
    # the model's sampling settings (generation_config.json) with the run's guidance (None: no CFG)
    cfg = _require(sampling, "ImageSamplingConfig").for_model(model, guidance_scale=cfg_scale)

    def image_fn(prompts: list[str], indices: list[int]) -> list:
        samples = generate_images(model, prompts, seeds=[seed + i for i in indices], cfg=cfg)
        return [np.asarray(img.convert("RGB")) for img in samples.images]

    return image_fn
