"""A KV cache for sampling: buffers allocated once, attention over the tokens so far only.

``transformers``' two caches each pay for something sampling does not need: ``DynamicCache``
concatenates (copies) the whole cache at every step, and ``StaticCache`` hands attention the
full preallocated length (future slots masked) at every step, so early steps read keys and
values that are not there yet. :class:`PreallocatedLayer` writes each step into buffers sized
once for prompt + new tokens and returns views of the filled prefix; to the model it is a
dynamic cache (mask sizes = tokens so far), so the 2D attention mask grows as with
``DynamicCache``. Speeds: docs/MODEL.md.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys / values in [B, heads, capacity, head_dim] buffers; ``keys`` / ``values``
    are views [B, heads, T, head_dim] of the first T (filled) slots."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads, _, _ = key_states.shape
        self._key_buffer = key_states.new_empty(batch, heads, self.capacity, key_states.shape[-1])
        self._value_buffer = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
        self.keys, self.values = self._key_buffer[:, :, :0], self._value_buffer[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"preallocated KV cache full: {end} tokens for a capacity of {self.capacity} "
                             "(prefill was given too small max_new_tokens)")
        self._key_buffer[:, :, start:end] = key_states
        self._value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self._key_buffer[:, :, :end], self._value_buffer[:, :, :end]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("PreallocatedLayer keeps its batch fixed (beam search: use DynamicCache)")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("PreallocatedLayer keeps its batch fixed (beam search: use DynamicCache)")


def preallocated_cache(llm_config, capacity: int) -> Cache:
    """A cache of :class:`PreallocatedLayer` for every layer of a full-attention decoder."""
    text_config = llm_config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None) or ["full_attention"] * text_config.num_hidden_layers
    other = sorted(set(layer_types) - {"full_attention"})
    if other:
        raise ValueError(f"the preallocated KV cache serves full-attention layers only; this LLM has {other} "
                         "layers: sample with cache 'dynamic' or 'static'")
    return Cache(layers=[PreallocatedLayer(capacity) for _ in layer_types])
