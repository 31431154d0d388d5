"""Unified autoregressive multimodal model on the TokLIP visual tokenizer.

    from unified_ar import UnifiedARModel, UnifiedARProcessor

Subpackages: ``unified_ar.tokenizer`` (VQ + TokLIP), ``unified_ar.train``
(data, DeepSpeed engine, stages), ``unified_ar.eval`` (benchmarks, metrics).
Importing this package has no side effects and imports no heavy dependency: the two
classes above are imported (with torch) on first use.
"""
__version__ = "0.1.0"

_LAZY = {"UnifiedARModel": "unified_ar.modeling", "UnifiedConfig": "unified_ar.modeling",
         "UnifiedARProcessor": "unified_ar.processor"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'unified_ar' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
