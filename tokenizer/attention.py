"""Attention kernels for the tokenizer models, chosen by a config value.

``"sdpa"`` (PyTorch scaled_dot_product_attention) is the default, ``"eager"``
is the plain softmax(QK^T)V reference, and ``"xformers"`` uses xformers'
memory-efficient attention (GPU). Asking for a backend that is not installed is
an error at model construction (``check_backend``), never a silent fallback.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

ATTN_BACKENDS = ("sdpa", "eager", "xformers")


def check_backend(name: str, where: str = "attn_backend") -> str:
    """Validate an attention backend name; raise if unknown or not installed."""
    if name not in ATTN_BACKENDS:
        raise ValueError(f"{where}: unknown attention backend {name!r} (choose from {', '.join(ATTN_BACKENDS)})")
    if name == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ValueError(f"{where}: 'xformers' was asked for but the xformers package is not installed "
                         "(pip install xformers, or use attn_backend: sdpa)")
    return name


def _causal_bool_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """[q_len, k_len] True where allowed; queries are the last ``q_len`` of ``k_len`` positions.

    Aligned to the bottom right so that a query block appended to a KV cache
    sees every cached key and the keys up to itself."""
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device).unsqueeze(1) + offset
    cols = torch.arange(k_len, device=device).unsqueeze(0)
    return cols <= rows


def _eager(q, k, v, causal: bool) -> torch.Tensor:
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if causal:
        allowed = _causal_bool_mask(q.shape[-2], k.shape[-2], q.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _xformers(q, k, v, causal: bool) -> torch.Tensor:
    import xformers.ops as xops  # only reached after check_backend found it installed

    bias = None
    if causal:
        bias = xops.fmha.attn_bias.LowerTriangularFromBottomRightMask()
    # xformers wants [B, N, H, Dh]
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)


def dense(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` with row-major strides along every dim. ``contiguous()`` ignores the strides
    of size-1 dims, which CUDA's fused SDPA kernels check: a [B,1,1,C] view with stride 1 on its
    length-1 sequence dim failed on the H100 with "query is not correctly aligned (strideM)"."""
    return t.new_empty(t.shape).copy_(t)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              backend: str = "sdpa") -> torch.Tensor:
    """Multi-head attention with scale 1/sqrt(head_dim).

    Args:
        q: [B, H, Nq, Dh]; k, v: [B, H, Nk, Dh] with Nk >= Nq when ``causal``
            (the queries are the last Nq positions of the key sequence).
        causal: mask keys after each query's position.
        backend: one of ``ATTN_BACKENDS``.
    Returns:
        [B, H, Nq, Dh]
    """
    if backend == "sdpa":
        if not causal:
            return F.scaled_dot_product_attention(q, k, v)
        if q.shape[-2] == k.shape[-2]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # SDPA's is_causal aligns top-left; with a KV cache we need bottom-right
        mask = _causal_bool_mask(q.shape[-2], k.shape[-2], q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend == "eager":
        return _eager(q, k, v, causal)
    if backend == "xformers":
        return _xformers(q, k, v, causal)
    raise ValueError(f"unknown attention backend {backend!r} (choose from {', '.join(ATTN_BACKENDS)})")
