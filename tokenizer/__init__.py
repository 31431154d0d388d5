"""Pixels <-> codes (LlamaGen VQ) and codes -> semantic features (TokLIP)."""
