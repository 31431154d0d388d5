"""Sampling as small pure functions over a KV cache (LlamaGen's prefill / decode_one_token /
decode_n_tokens), for text-to-image with classifier-free guidance and for text (chat / VQA).

CFG runs the conditional and unconditional rows as ``[cond; uncond]`` halves of one
batch, and both halves are fed the same sampled code. Every prompt owns a
``torch.Generator`` seeded from its seed, so a batch samples exactly what its prompts
sample one by one, and micro-batching never changes the result.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unified_ar.compiled_decode import NextTokenSteps, use_compiled
from unified_ar.generation_config import DEFAULT_GUIDANCE_SCALE
from unified_ar.kv_cache import preallocated_cache
from unified_ar.llm import max_context
from unified_ar.sequences import chat_prompt, generation_prompt
from unified_ar.tokenizer.transforms import to_uint8

VQA_TEMPLATE = "<image>\n{question}"  # as the Shapes world's LLaVA conversations place the image
CacheKind = Literal["preallocated", "static", "dynamic", "none"]


@dataclass
class ImageSamplingConfig:
    guidance_scale: float | None = DEFAULT_GUIDANCE_SCALE  # None: no CFG (conditional rows only)
    guidance_schedule: Literal["constant", "linear", "cosine"] = "constant"
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    max_batch: int = 0  # prompts per forward (0: all)
    memory_limit_mb: float = 0.0  # KV-cache budget per micro-batch (0: no limit)
    # KV cache: "preallocated" (unified_ar.kv_cache: buffers sized once, attention over the tokens so
    # far; the fastest on CPU, docs/MODEL.md), transformers' "static" or "dynamic", or
    # "none" (recompute the whole sequence every step: the exactness and speed baseline)
    cache: CacheKind = "preallocated"
    decode_images: bool = True
    # the decode step (unified_ar/compiled_decode.py, docs/MODEL.md): None compiles it on CUDA when the
    # cache is "preallocated" and the LLM a Llama / Qwen2 / Qwen3, True requires it, False: eager
    compile: bool | None = None
    # "next_token": one code per forward; "jacobi": speculative Jacobi decoding (unified_ar/jacobi.py),
    # up to jacobi_window codes proposed and verified per forward, the same distribution
    sampler: Literal["next_token", "jacobi"] = "next_token"
    jacobi_window: int = 16

    @classmethod
    def for_model(cls, model, **settings) -> "ImageSamplingConfig":
        """The model's image settings (its ``generation_config.json``), then ``settings`` on top."""
        return cls(**{**asdict(model.generation_config.image), **settings})


@dataclass
class TextSamplingConfig:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0
    top_p: float = 1.0
    cache: CacheKind = "preallocated"

    @classmethod
    def for_model(cls, model, **settings) -> "TextSamplingConfig":
        """The model's text settings (its ``generation_config.json``), then ``settings`` on top."""
        text = asdict(model.generation_config.text)
        text.pop("answer_max_new_tokens")
        return cls(**{**text, **settings})


@dataclass
class ImageSamples:
    """``codes`` [B,h,w] long; ``images`` (PIL) when decoded; the seeds used per prompt."""

    codes: torch.Tensor
    images: list[Image.Image] | None
    seeds: list[int]
    logits: list[torch.Tensor] = field(default_factory=list)  # per step [B,K] guided logits, when kept


# -- small pieces -------------------------------------------------------------------------------
def left_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> ids [B,L] left-padded with ``pad_id`` and attention mask [B,L] (1 = real)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B,L] from a left-padded mask: 0 at each row's first real token."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def make_generators(seeds: list[int], device="cpu") -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def guidance_at(scale: float, schedule: str, step: int, total: int) -> float:
    """Guidance scale at ``step`` of ``total``: constant, or rising from 1 to ``scale``."""
    if schedule == "constant" or total <= 1:
        return scale
    frac = step / (total - 1)
    if schedule == "linear":
        return 1.0 + (scale - 1.0) * frac
    if schedule == "cosine":
        return 1.0 + (scale - 1.0) * (1.0 - math.cos(math.pi * frac)) / 2.0
    raise ValueError(f"unknown guidance_schedule {schedule!r} (constant, linear, cosine)")


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus filtering of logits [B,V] (removed entries set to -inf)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_tokens(logits: torch.Tensor, generators: list[torch.Generator], temperature: float,
                  top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits [B,V] -> indices [B]; row ``i`` draws its uniform from ``generators[i]``.

    Inverse-CDF sampling: one uniform per row, then one batched search of the cumulative
    probabilities (per-row ``torch.multinomial`` calls took ~9% of a tiny-LLM sampling call)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)
    uniform = torch.stack([torch.rand((), generator=g, device=g.device) for g in generators]).to(cdf.device)
    # right=True: the first index whose cdf exceeds u * total, never an index of probability 0
    picked = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True)[:, 0]
    return picked.clamp(max=logits.shape[-1] - 1)


# -- the model passes -------------------------------------------------------------------------
@dataclass
class DecodeState:
    """What the next forward needs: the cache (or, without one, every embedding so far)."""

    cache: object | None
    # [R, L + max_new_tokens]: with a static cache the future columns are 0 until their token
    # arrives and the whole width is passed; otherwise they are 1 and the first ``length`` are passed
    attention_mask: torch.Tensor
    position_ids: torch.Tensor  # [R, 1] position of the last token
    length: int  # tokens seen so far
    static: bool = False
    embeds: torch.Tensor | None = None  # [R, T, H] when recomputing without a cache


def _new_cache(model, kind: str, capacity: int):
    from transformers import DynamicCache, StaticCache

    if kind == "preallocated":
        return preallocated_cache(model.llm.config, capacity)
    if kind == "static":
        return StaticCache(config=model.llm.config, max_cache_len=capacity)
    if kind == "dynamic":
        return DynamicCache(config=model.llm.config)
    if kind == "none":
        return None
    raise ValueError(f"unknown cache {kind!r} ({', '.join(get_args(CacheKind))})")


def prefill(model, embeds: torch.Tensor, attention_mask: torch.Tensor, cache: CacheKind = "preallocated",
            max_new_tokens: int = 0):
    """Run the prompt embeds [R,L,H] (mask [R,L]) with room for ``max_new_tokens`` more;
    returns (last logits [R,V] float, DecodeState)."""
    pos = positions(attention_mask)
    length = embeds.shape[1]
    kv = _new_cache(model, cache, length + max_new_tokens)
    static = cache == "static"
    mask = F.pad(attention_mask, (0, max_new_tokens), value=0 if static else 1)
    out = model.run_llm(embeds, mask if static else mask[:, :length], pos, cache=kv, use_cache=kv is not None,
                        logits_to_keep=1)
    state = DecodeState(kv, mask, pos[:, -1:], length, static, embeds if kv is None else None)
    return out.logits[:, -1].float(), state


def decode_one_token(model, step_embeds: torch.Tensor, state: DecodeState):
    """Feed one token's embeds [R,1,H]; returns (logits [R,V] float, new DecodeState)."""
    pos = state.position_ids + 1
    if state.length >= state.attention_mask.shape[1]:
        raise ValueError("sampling past the room prefill made: prefill was given too small max_new_tokens")
    mask = state.attention_mask
    if state.static:
        mask = mask.clone()
        mask[:, state.length] = 1
        step_mask = mask
    else:
        step_mask = mask[:, :state.length + 1]
    if state.cache is not None:
        out = model.run_llm(step_embeds, step_mask, pos, cache=state.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float(), DecodeState(out.cache, mask, pos, state.length + 1, state.static)
    embeds = torch.cat([state.embeds, step_embeds], dim=1)
    out = model.run_llm(embeds, step_mask, positions(step_mask), logits_to_keep=1)
    return out.logits[:, -1].float(), DecodeState(None, mask, pos, state.length + 1, False, embeds)


def _check_context(model, prompt_len: int, new_tokens: int) -> None:
    limit = max_context(model.llm)
    if prompt_len + new_tokens > limit:
        raise ValueError(f"prompt of {prompt_len} tokens + {new_tokens} new tokens exceeds the model's "
                         f"context of {limit} (llm max_position_embeddings)")


# -- text-to-image --------------------------------------------------------------------------
def decode_n_tokens(model, logits, state: DecodeState, n: int, generators, cfg: ImageSamplingConfig,
                    cfg_rows: bool, keep_logits: bool = False):
    """Sample ``n`` image codes; rows are [cond; uncond] halves when ``cfg_rows``.

    Returns codes [B,n] and the per-step guided logits over the codebook (when kept)."""
    if cfg.sampler == "jacobi":
        from unified_ar.jacobi import decode_jacobi

        return decode_jacobi(model, logits, state, n, generators, cfg, cfg_rows, keep_logits)
    start, stop = model.layout.image_id_range()
    batch = len(generators)
    tk_cache = model.toklip.new_cache(batch) if model.gen_projector is not None else None
    steps = NextTokenSteps(model, state) if use_compiled(model, cfg) else None
    codes, kept = [], []
    image_logits = logits[:, start:stop]
    for t in range(n):
        step = image_logits
        if cfg_rows:
            cond, uncond = step[:batch], step[batch:]
            scale = guidance_at(cfg.guidance_scale, cfg.guidance_schedule, t, n)
            step = uncond + scale * (cond - uncond)
        if keep_logits:
            kept.append(step)
        code = sample_tokens(step, generators, cfg.temperature, cfg.top_k, cfg.top_p)
        codes.append(code)
        if t == n - 1:
            break  # the last code is never fed back
        feats = model.toklip.extend(tk_cache, code[:, None]) if tk_cache is not None else None
        ids = code[:, None] + start
        if cfg_rows:
            ids = ids.repeat(2, 1)
            feats = feats.repeat(2, 1, 1) if feats is not None else None
        embeds = model.gen_embeds(ids, feats, t)
        if steps is None:
            logits, state = decode_one_token(model, embeds, state)
            image_logits = logits[:, start:stop]
        else:
            image_logits = steps.advance(embeds)
    return torch.stack(codes, dim=1), kept


def _kv_bytes_per_prompt(model, tokens: int, cfg_rows: bool) -> float:
    c = model.llm.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    elem = model.llm.get_input_embeddings().weight.element_size()
    rows = 2 if cfg_rows else 1
    return rows * c.num_hidden_layers * 2 * kv_heads * head_dim * tokens * elem


def micro_batch_size(model, batch: int, tokens: int, cfg: ImageSamplingConfig) -> int:
    """Prompts per forward: ``max_batch`` and the KV-cache memory limit, whichever is smaller."""
    size = cfg.max_batch if cfg.max_batch > 0 else batch
    if cfg.memory_limit_mb > 0:
        per = _kv_bytes_per_prompt(model, tokens, cfg.guidance_scale is not None)
        fit = int(cfg.memory_limit_mb * 2**20 // per)
        if fit < 1:
            raise ValueError(f"memory_limit_mb={cfg.memory_limit_mb} is below one prompt's KV cache "
                             f"({per / 2**20:.2f} MiB for {tokens} tokens)")
        size = min(size, fit)
    return max(1, min(size, batch))


def codes_to_pil(model, codes: torch.Tensor) -> list[Image.Image]:
    """codes [B,h,w] -> decoded PIL RGB images."""
    arr = to_uint8(model.vq.decode(codes.to(model.device)))
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def _t2i_chunk(model, captions: list[str], seeds: list[int], cfg: ImageSamplingConfig, keep_logits: bool):
    layout, tok = model.layout, model.tokenizer
    n = model.num_image_tokens
    rows = [generation_prompt(layout, tok, c) + [layout.image_start_id] for c in captions]
    cfg_rows = cfg.guidance_scale is not None
    if cfg_rows:
        rows += [generation_prompt(layout, tok, None) + [layout.image_start_id]] * len(captions)
    ids, mask = left_pad(rows, layout.pad_id, model.device)
    _check_context(model, ids.shape[1], n)
    logits, state = prefill(model, model.embed(ids), mask, cfg.cache, n)
    return decode_n_tokens(model, logits, state, n, make_generators(seeds), cfg, cfg_rows, keep_logits)


@torch.inference_mode()
def generate_images(model, captions: list[str], seeds: list[int] | int = 0,
                    cfg: ImageSamplingConfig | None = None, keep_logits: bool = False) -> ImageSamples:
    """Text-to-image for a batch of captions. ``seeds``: one per caption, or a base (caption i
    gets base + i). Returns codes [B,h,w] (and PIL images when ``cfg.decode_images``)."""
    cfg = cfg or ImageSamplingConfig()
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(captions))]
    if len(seeds) != len(captions):
        raise ValueError(f"got {len(seeds)} seeds for {len(captions)} captions")
    longest = max(len(generation_prompt(model.layout, model.tokenizer, c)) for c in [*captions, None])
    size = micro_batch_size(model, len(captions), longest + 1 + model.num_image_tokens, cfg)
    codes, kept = [], []
    for i in range(0, len(captions), size):
        c, k = _t2i_chunk(model, captions[i:i + size], seeds[i:i + size], cfg, keep_logits)
        codes.append(c)
        kept.append(k)
    codes = torch.cat(codes).view(len(captions), *model.grid)
    logits = [torch.cat([k[t] for k in kept]) for t in range(len(kept[0]))] if keep_logits else []
    images = codes_to_pil(model, codes) if cfg.decode_images else None
    return ImageSamples(codes, images, list(seeds), logits)


# -- text (chat / VQA) ------------------------------------------------------------------------
def _text_bias(model, width: int, device) -> torch.Tensor:
    """Additive bias [V]: 0 on text ids a reply may contain, -inf elsewhere (image ids, image
    specials, pad, the unused rows that pad the vocabulary)."""
    layout = model.layout
    bias = torch.full((width,), float("-inf"), device=device)
    bias[: layout.text_vocab_size] = 0.0
    for i in (layout.image_start_id, layout.image_end_id, layout.image_placeholder_id, layout.pad_id):
        bias[i] = float("-inf")
    bias[layout.eos_id] = 0.0
    return bias


@torch.inference_mode()
def generate_text(model, prompts: list[list[int]], image_codes: torch.Tensor | None = None,
                  cfg: TextSamplingConfig | None = None, seeds: list[int] | int = 0) -> list[list[int]]:
    """Continue each prompt (left-padded into one batch) until eos or ``max_new_tokens``.

    ``image_codes`` [M,N]: one row per ``<|image|>`` run across the prompts, in order.
    Returns the new ids per prompt, without the eos."""
    cfg = cfg or TextSamplingConfig()
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(prompts))]
    layout = model.layout
    ids, mask = left_pad(prompts, layout.pad_id, model.device)
    _check_context(model, ids.shape[1], cfg.max_new_tokens)
    logits, state = prefill(model, model.embed(ids, image_codes), mask, cfg.cache, cfg.max_new_tokens)
    bias = _text_bias(model, logits.shape[-1], logits.device)
    gens = make_generators(seeds, model.device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=model.device)
    out: list[list[int]] = [[] for _ in prompts]
    for _ in range(cfg.max_new_tokens):
        tok = sample_tokens(logits + bias, gens, cfg.temperature, cfg.top_k, cfg.top_p)
        tok = torch.where(done, torch.full_like(tok, layout.eos_id), tok)
        for i in (~done).nonzero().flatten().tolist():
            if int(tok[i]) != layout.eos_id:
                out[i].append(int(tok[i]))
        done |= tok == layout.eos_id
        if bool(done.all()):
            break
        logits, state = decode_one_token(model, model.llm.get_input_embeddings()(tok[:, None]), state)
    return out


def _text_tokens(model, prompt_ids: list[int], image_codes: torch.Tensor | None, cfg: TextSamplingConfig,
                 seed: int) -> Iterator[int]:
    """The new ids of one prompt, one at a time, exactly as :func:`generate_text` samples that
    prompt alone with ``seeds=seed`` (stops before the eos)."""
    layout = model.layout
    ids, mask = left_pad([prompt_ids], layout.pad_id, model.device)
    _check_context(model, ids.shape[1], cfg.max_new_tokens)
    logits, state = prefill(model, model.embed(ids, image_codes), mask, cfg.cache, cfg.max_new_tokens)
    bias = _text_bias(model, logits.shape[-1], logits.device)
    gens = make_generators([seed], model.device)
    for step in range(cfg.max_new_tokens):
        tok = sample_tokens(logits + bias, gens, cfg.temperature, cfg.top_k, cfg.top_p)
        if int(tok[0]) == layout.eos_id:
            return
        yield int(tok[0])
        if step + 1 < cfg.max_new_tokens:
            logits, state = decode_one_token(model, model.llm.get_input_embeddings()(tok[:, None]), state)


def text_pieces(tokenizer, tokens: Iterable[int]) -> Iterator[str]:
    """The text each token adds, as ``tokenizer.decode(ids, skip_special_tokens=True).strip()`` of
    the whole sequence so far reads: the pieces join to the decode of all ``tokens``.

    Decoding the whole sequence keeps sentencepiece's word-start spaces and byte-level BPE's
    multi-byte characters right; a character whose bytes are still arriving (U+FFFD at the end)
    and trailing whitespace (stripped from the answer unless more text follows) wait."""
    ids: list[int] = []
    shown = ""
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids, skip_special_tokens=True).strip().rstrip("\ufffd").rstrip()
        if len(text) > len(shown) and text.startswith(shown):
            yield text[len(shown):]
            shown = text
    final = tokenizer.decode(ids, skip_special_tokens=True).strip()
    if not final.startswith(shown):
        raise RuntimeError(f"the tokenizer decoded {shown!r} as the start of the text, then {final!r}: "
                           "it rewrites earlier text (clean_up_tokenization_spaces?), so it cannot stream")
    if len(final) > len(shown):
        yield final[len(shown):]


@torch.inference_mode()
def stream_text(model, prompt_ids: list[int], image_codes: torch.Tensor | None = None,
                cfg: TextSamplingConfig | None = None, seed: int = 0) -> Iterator[str]:
    """Continue one prompt, yielding the text of each new token as it is sampled.

    ``image_codes`` [M,N]: one row per ``<|image|>`` run of the prompt. The pieces join to
    ``model.processor.decode(generate_text(model, [prompt_ids], image_codes, cfg, seed)[0])``."""
    cfg = cfg or TextSamplingConfig()
    yield from text_pieces(model.tokenizer, _text_tokens(model, prompt_ids, image_codes, cfg, seed))


def image_to_codes(model, item) -> torch.Tensor:
    """A PIL image or an image file path (under the model's image rule), pixels [3,H,W] in [-1,1],
    or codes [N] / [h,w] -> codes [N]."""
    if isinstance(item, (Image.Image, str, Path)):
        item = model.processor.pixels(item)
    item = torch.as_tensor(item)
    if item.dtype.is_floating_point:
        if item.dim() != 3 or item.shape[0] != 3:
            raise ValueError(f"expected pixels [3,H,W], got shape {tuple(item.shape)}")
        item = model.vq.encode(item[None].to(model.device))[0]
    if item.numel() != model.num_image_tokens:
        raise ValueError(f"expected {model.num_image_tokens} codes per image, got {item.numel()}")
    return item.reshape(-1).long().to(model.device)


@torch.inference_mode()
def answer_questions(model, images_or_codes: list, questions: list[str], max_new_tokens: int = 16,
                     batch_size: int = 16, cfg: TextSamplingConfig | None = None) -> list[str]:
    """Answer each question about its image (PIL, pixels [3,H,W] or codes [N]/[h,w]); greedy by default.

    A question given one image is asked as ``VQA_TEMPLATE`` (the image first). A question given a
    list of images holds one ``<image>`` marker per image where it belongs (MMMU) and is asked as
    written, the images fed in marker order."""
    from unified_ar.sequences import IMAGE_MARK

    if len(images_or_codes) != len(questions):
        raise ValueError(f"got {len(images_or_codes)} images for {len(questions)} questions")
    image_types = (Image.Image, str, Path, torch.Tensor, np.ndarray)

    def several(item) -> bool:  # a list of images, not codes written as a (nested) list of ints
        return isinstance(item, (list, tuple)) and bool(item) and all(isinstance(x, image_types) for x in item)

    def content(n: int, item, question: str) -> tuple[str, list]:
        if not several(item):
            return VQA_TEMPLATE.format(question=question), [item]
        if question.count(IMAGE_MARK) != len(item):
            raise ValueError(f"question {n}: {question.count(IMAGE_MARK)} {IMAGE_MARK} marker(s) "
                             f"for {len(item)} images")
        return question, list(item)

    cfg = cfg or TextSamplingConfig(max_new_tokens=max_new_tokens)
    answers: list[str] = []
    for i in range(0, len(questions), batch_size):
        asked = [content(i + j, x, q) for j, (x, q) in
                 enumerate(zip(images_or_codes[i:i + batch_size], questions[i:i + batch_size]))]
        codes = torch.stack([image_to_codes(model, x) for _, items in asked for x in items])
        prompts = [chat_prompt(model.layout, model.tokenizer, [{"role": "user", "content": text}],
                               model.num_image_tokens) for text, _ in asked]
        for new in generate_text(model, prompts, codes, cfg):
            answers.append(model.tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers
