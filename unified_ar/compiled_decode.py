"""A compiled decode step for text-to-image sampling: the LLM over a static KV cache.

``decode_one_token`` runs the transformers model, whose per-step Python (mask building,
cache objects, dispatch through every module) costs more than the arithmetic at small
sizes. :func:`block_forward` is the same decoder written as one function over fixed-size
buffers: the keys / values of every layer in ``[R, kv_heads, capacity, head_dim]``, written
at per-row slots, attention over the whole capacity with a mask built from slots (so every
shape is static and ``torch.compile`` builds one graph; on CUDA it is also captured as a CUDA
graph). It reuses the LLM's own modules (norms, projections, MLP, rotary embedding), so
only the attention's bookkeeping is new, and it computes logits for the image ids only.

The prompt is prefilled eagerly by ``unified_ar.sampling.prefill`` (the preallocated cache);
:class:`StaticDecoder` copies that cache into its buffers. Rows may sit at different
lengths (speculative Jacobi decoding, ``unified_ar/jacobi.py``): every call takes per-row
positions and slots. Architectures: Llama, Qwen2, Qwen3 (full attention, default RoPE
or any RoPE the LLM's rotary module computes). Speeds: docs/MODEL.md.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, object]" = weakref.WeakKeyDictionary()
_COUNTERS: list[list[int]] = []  # open count_forwards() counters


@contextmanager
def count_forwards(model):
    """Count LLM forwards inside the block: calls of the transformers model (prefill, eager steps,
    ``generate()``) and :class:`StaticDecoder` steps. Yields a one-element list holding the count."""
    counter = [0]
    hook = model.llm.register_forward_hook(lambda *args: counter.__setitem__(0, counter[0] + 1))
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        hook.remove()
        _COUNTERS.remove(counter)


def unsupported_reason(llm) -> str | None:
    """Why :func:`block_forward` cannot run this LLM, or None when it can."""
    config = llm.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {config.model_type!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    if set(layer_types) != {"full_attention"} or getattr(config, "use_sliding_window", False):
        return "sliding-window attention layers"
    if getattr(llm.lm_head, "bias", None) is not None:
        return "an lm_head with a bias"
    return None


def block_forward(llm, head: torch.Tensor, embeds: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
                  key_valid: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """Feed embeds [R,T,H] at RoPE positions ``pos`` [R,T], writing their keys / values at cache
    ``slots`` [R,T] (consecutive per row); query t of row r attends to the slots s <= slots[r,t]
    with ``key_valid[r,s]`` (False on left padding), and to itself. Returns logits [R,T,K] (float)
    over the rows of ``head`` (the image ids' rows of the LLM's output matrix)."""
    inner = llm.model
    rows, width = slots.shape
    capacity = key_valid.shape[1]
    cos, sin = inner.rotary_emb(embeds, pos)
    cos, sin = cos[:, :, None], sin[:, :, None]  # [R,T,1,hd]: q and k are [R,T,heads,hd]
    row_ids = torch.arange(rows, device=slots.device)[:, None].expand(-1, width)
    slot_ids = torch.arange(capacity, device=slots.device)
    visible = (key_valid[:, None, :] | (slot_ids == slots[:, :, None])) & (slot_ids <= slots[:, :, None])
    blocked = ~visible[:, None]  # [R,1,T,cap]
    h = embeds
    for i, layer in enumerate(inner.layers):
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        shape = (rows, width, -1, attn.head_dim)
        q, k = attn.q_proj(x).view(shape), attn.k_proj(x).view(shape)
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm on each head's queries and keys
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        keys[i][row_ids, :, slots] = k  # in place (index_put_): the compiled graph writes T slots only
        values[i][row_ids, :, slots] = attn.v_proj(x).view(shape)
        out = _attention(q, keys[i], values[i], blocked, attn.scaling)
        h = h + attn.o_proj(out.reshape(rows, width, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return F.linear(inner.norm(h), head).float()


def _attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, blocked: torch.Tensor,
               scale: float) -> torch.Tensor:
    """Attention of q [R,T,h,d] over the cache [R,kv_heads,cap,d] -> [R,T,h,d]; written out (SDPA's
    CPU kernels took longer than this for one query over a masked cache), softmax in float32 as
    transformers' eager attention does."""
    q = q.transpose(1, 2)
    k, v = keys, values
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    weights = scores.masked_fill(blocked, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return (weights @ v).transpose(1, 2)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def compiled_block_forward(llm):
    """:func:`block_forward` under ``torch.compile`` (one per LLM, kept while the LLM lives;
    CUDA graphs on a CUDA device)."""
    fn = _COMPILED.get(llm)
    if fn is None:
        mode = "reduce-overhead" if llm.device.type == "cuda" else None
        fn = torch.compile(block_forward, dynamic=False, mode=mode)
        _COMPILED[llm] = fn
    return fn


def _bucket(n: int, step: int = 64) -> int:
    """Capacities rounded up, so prompts of nearby lengths share one compiled graph."""
    return -(-n // step) * step


class StaticDecoder:
    """The static KV cache of one sampling call and the step that feeds it.

    Built from an eager prefill's preallocated cache (``DecodeState.cache``) and its attention
    mask [R, L + new]; ``extra`` slots of room beyond (a Jacobi window's drafts)."""

    def __init__(self, model, cache, attention_mask: torch.Tensor, prompt_len: int, compiled: bool,
                 extra: int = 0):
        reason = unsupported_reason(model.llm)
        if reason is not None:
            raise ValueError(f"the compiled decode step does not support this LLM: {reason}; "
                             "sample with compile=False")
        start, stop = model.layout.image_id_range()
        self.llm = model.llm
        self.head = model.llm.lm_head.weight[start:stop]
        self.prompt_len = prompt_len
        capacity = _bucket(attention_mask.shape[1] + extra)
        rows = attention_mask.shape[0]
        self.key_valid = F.pad(attention_mask[:, :prompt_len].bool(), (0, capacity - prompt_len), value=True)
        self.keys, self.values = [], []
        for layer in cache.layers:
            k = layer.keys.new_zeros(rows, layer.keys.shape[1], capacity, layer.keys.shape[-1])
            v = torch.zeros_like(k)
            k[:, :, :prompt_len] = layer.keys
            v[:, :, :prompt_len] = layer.values
            self.keys.append(k)
            self.values.append(v)
        self.forward = compiled_block_forward(model.llm) if compiled else block_forward

    def step(self, embeds: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor, last_slot: int) -> torch.Tensor:
        """Logits [R,T,K] over image ids for embeds [R,T,H] at positions / slots [R,T];
        ``last_slot``: the largest slot written (known to the caller without a device sync)."""
        if last_slot >= self.key_valid.shape[1]:
            raise ValueError(f"static KV cache full: slot {last_slot} for a capacity of {self.key_valid.shape[1]}")
        for counter in _COUNTERS:
            counter[0] += 1
        return self.forward(self.llm, self.head, embeds, pos, slots, self.key_valid, self.keys, self.values)


def use_compiled(model, cfg) -> bool:
    """Whether ``cfg`` (an ``ImageSamplingConfig``) samples with the compiled step: ``compile=True``
    requires it (an error says why it cannot run), False never, None on CUDA whenever the cache
    is ``preallocated`` and the LLM is supported (on CPU the eager step is as fast or faster at
    100M parameters and compiling costs ~30 s: docs/MODEL.md)."""
    if cfg.compile is False or (cfg.compile is None and model.device.type != "cuda"):
        return False
    reason = unsupported_reason(model.llm)
    if cfg.cache != "preallocated":
        reason = reason or f"cache {cfg.cache!r} (the compiled step uses the preallocated cache's prefill)"
    if reason is None:
        return True
    if cfg.compile:
        raise ValueError(f"compile=True: the compiled decode step does not support {reason}")
    return False


class NextTokenSteps:
    """One-token decoding through :class:`StaticDecoder`: ``advance(embeds [R,1,H])`` feeds the
    code just sampled and returns the next logits [R,K] over image ids."""

    def __init__(self, model, state, compiled: bool = True):
        self.decoder = StaticDecoder(model, state.cache, state.attention_mask, state.length, compiled)
        self.pos = state.position_ids.clone()
        self.slot = state.length
        self.slots = torch.full_like(self.pos, self.slot)

    def advance(self, embeds: torch.Tensor) -> torch.Tensor:
        self.pos = self.pos + 1
        self.slots.fill_(self.slot)
        logits = self.decoder.step(embeds, self.pos, self.slots, self.slot)
        self.slot += 1
        return logits[:, -1]
