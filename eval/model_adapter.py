"""The model side of evaluation: turn a model directory into ``answer_fn`` / ``image_fn``.

Evaluation only needs two callables:

* ``answer_fn(list[VQASample]) -> list[str]`` (greedy short answers), for ``eval-vqa``;
* ``image_fn(list[str]) -> list[np.ndarray uint8 [H, W, 3]]`` (one image per prompt), for ``eval-t2i``.

They come from the unified model's batched samplers in ``unified_ar/sampling.py``
(another part of the project), imported lazily so that the metrics and the
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


def _factory(name: str) -> Callable:
    sampling = _sampling()
    factory = getattr(sampling, name, None)
    if factory is None:
        raise RuntimeError(f"{SAMPLING_MODULE} has no {name}(); eval/model_adapter.py expects "
                           f"{name}(model_dir, **options) returning the callable described in its docstring")
    return factory


def load_answer_fn(model_dir: str, max_new_tokens: int = 16) -> Callable:
    """``answer_fn`` for ``model_dir`` (greedy decoding, ``max_new_tokens`` per answer)."""
    return _factory("vqa_answer_fn")(model_dir, max_new_tokens=max_new_tokens)


def load_image_fn(model_dir: str, cfg_scale: float = 1.0, seed: int = 0) -> Callable:
    """``image_fn`` for ``model_dir`` (classifier-free guidance ``cfg_scale``, seeded)."""
    return _factory("t2i_image_fn")(model_dir, cfg_scale=cfg_scale, seed=seed)
