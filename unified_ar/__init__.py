"""Unified autoregressive multimodal model on the TokLIP visual tokenizer.

Subpackages: ``unified_ar.tokenizer`` (VQ + TokLIP), ``unified_ar.train``
(data, DeepSpeed engine, stages), ``unified_ar.eval`` (benchmarks, metrics).
Importing this package has no side effects and imports no heavy dependency.
"""
__version__ = "0.1.0"
