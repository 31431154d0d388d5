"""Speculative Jacobi decoding of image codes (Teng et al. 2024, arXiv 2410.01699; training-free).

Every forward feeds, per row, the last accepted code and a window of draft codes after it
(``jacobi_window`` positions, :class:`unified_ar.compiled_decode.StaticDecoder`: rows sit at
their own lengths; compiled as ``compile`` says, see ``use_compiled``). The forward gives the model's distribution ``p_t`` at every window
position; drafts are verified left to right with speculative sampling's rule: draft ``x``,
drawn from its proposal ``q``, is accepted with probability ``min(1, p(x) / q(x))``; at the
first rejection a code is drawn from ``norm(max(0, p - q))`` and the rest of the window is
redrafted: positions the forward saw get a draft drawn from this forward's ``p_t`` (the Jacobi
update: their context held the old drafts), new positions a uniformly random code. Each
accepted or resampled code is distributed as the model's next-code distribution given the
accepted codes before it (whatever the proposal, as long as the draft was drawn from it and
the acceptance does not look at it beforehand), so the sampler samples what one-code decoding
samples, in fewer forwards. ``p`` is the guided, tempered, top-k / top-p filtered distribution
the one-code sampler draws from; at temperature 0 distributions are one-hot (argmax) and the
rule becomes Jacobi decoding's "keep while the draft is the argmax", so greedy codes equal
one-code greedy decoding's.

Every row draws its uniforms from its own generator, a fixed number per forward while it is
unfinished, so a batch samples what its prompts sample one by one (but not what the one-code
sampler samples with the same seed: the draws are used differently).
"""
from __future__ import annotations

import torch

from unified_ar.compiled_decode import StaticDecoder
from unified_ar.sampling import filter_logits, guidance_at, sample_tokens


def _distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Guided logits [..., K] -> the probabilities the sampler draws from (one-hot when greedy)."""
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    flat = logits.reshape(-1, logits.shape[-1]).float() / temperature
    return filter_logits(flat, top_k, top_p).softmax(dim=-1).view(logits.shape)


def _inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """probs [..., K] (unnormalised, >= 0) and uniforms [...] -> indices [...]."""
    cdf = probs.cumsum(dim=-1)
    picked = torch.searchsorted(cdf, (uniform * cdf[..., -1])[..., None], right=True)[..., 0]
    return picked.clamp(max=probs.shape[-1] - 1)


class _Window:
    """Per row: accepted codes so far, and the drafts / proposals of the next ``width`` positions."""

    def __init__(self, first: torch.Tensor, n: int, width: int, codebook: int, init_uniform: torch.Tensor):
        batch = first.shape[0]
        self.n, self.width, self.codebook = n, width, codebook
        self.codes = first.new_zeros(batch, n + width)  # room for a window past the end
        self.codes[:, 0] = first
        self.accepted = torch.ones(batch, dtype=torch.long, device=first.device)
        self.drafts = (init_uniform * codebook).long().clamp(max=codebook - 1)
        self.proposals = torch.full((batch, width, codebook), 1.0 / codebook, device=first.device)

    def pending(self) -> torch.Tensor:
        """The last accepted code of every row [B] (not yet fed to the LLM)."""
        return self.codes.gather(1, (self.accepted - 1)[:, None])[:, 0]


def _embeds(model, ids: torch.Tensor, grid_index: torch.Tensor) -> torch.Tensor:
    """Input embeddings of image ids [R,T] at per-row grid indices [R,T]: ``gen_embeds`` for rows
    at different grid indices (the model's image position embedding when it has one)."""
    embeds = model.llm.get_input_embeddings()(ids)
    if model.image_pos_embed is not None:
        embeds = embeds + model.image_pos_embed(grid_index.clamp(max=model.num_image_tokens - 1)).to(embeds.dtype)
    return embeds


def _check(model, cfg) -> None:
    if cfg.jacobi_window < 2:
        raise ValueError(f"jacobi_window={cfg.jacobi_window}: speculative Jacobi decoding needs a window of >= 2")
    if cfg.cache != "preallocated":
        raise ValueError(f"sampler 'jacobi' runs over the preallocated cache's prefill, not cache {cfg.cache!r}")
    if model.gen_projector is not None:
        raise ValueError("sampler 'jacobi' does not support semantic_gen_input (TokLIP features of draft "
                         "codes would need a TokLIP cache that rolls back): use sampler 'next_token'")


def decode_jacobi(model, logits: torch.Tensor, state, n: int, generators, cfg, cfg_rows: bool,
                  keep_logits: bool = False):
    """``decode_n_tokens`` by speculative Jacobi decoding: codes [B,n] and, when kept, per position
    the guided logits [B,K] the accepted code was verified (or drawn) against."""
    _check(model, cfg)
    start, stop = model.layout.image_id_range()
    batch, codebook = len(generators), stop - start
    width = min(cfg.jacobi_window, n)
    scales = torch.tensor([guidance_at(cfg.guidance_scale, cfg.guidance_schedule, t, n) if cfg_rows else 1.0
                           for t in range(n)] + [1.0] * width, device=logits.device)

    def guided(step: torch.Tensor, first: torch.Tensor) -> torch.Tensor:  # [R,T,K] -> [B,T,K]
        if not cfg_rows:
            return step
        s = scales[first[:, None] + torch.arange(step.shape[1], device=step.device)][..., None]
        cond, uncond = step[:batch], step[batch:]
        return uncond + s * (cond - uncond)

    zero = torch.zeros(batch, dtype=torch.long, device=logits.device)
    first_logits = guided(logits[:, None, start:stop], zero)[:, 0]
    kept = torch.zeros(batch, n + width, codebook, device=logits.device) if keep_logits else None
    if kept is not None:
        kept[:, 0] = first_logits
    first = sample_tokens(first_logits, generators, cfg.temperature, cfg.top_k, cfg.top_p)
    init = torch.stack([torch.rand(width, generator=g, device=g.device) for g in generators]).to(logits.device)
    win = _Window(first, n, width, codebook, init)
    if n > 1:
        decoder = StaticDecoder(model, state.cache, state.attention_mask, state.length, compiled=cfg.compile or (cfg.compile is None and model.device.type == "cuda"),
                               extra=width)
        while bool((win.accepted < n).any()):
            _iterate(model, decoder, win, state, generators, cfg, guided, kept, start)
    return win.codes[:, :n], list(kept[:, :n].unbind(1)) if kept is not None else []


def verify(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, valid: torch.Tensor, u_accept: torch.Tensor,
           u_resample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling's check of drafts [B,W] (drawn from proposals q [B,W,K]) against the
    model's p [B,W,K], left to right over the ``valid`` positions: returns how many lead drafts
    were accepted [B] (draft t with probability min(1, p/q)) and, for the first rejected position,
    a code drawn from norm(max(0, p - q)) [B] (meaningful where fewer than W were accepted)."""
    rows = torch.arange(p.shape[0], device=p.device)
    ratio = p.gather(-1, drafts[..., None])[..., 0] / q.gather(-1, drafts[..., None])[..., 0].clamp_min(1e-30)
    accepted = (u_accept < ratio) & valid
    m = accepted.long().cumprod(dim=1).sum(dim=1)
    at = m.clamp(max=p.shape[1] - 1)
    p_m = p[rows, at]
    residual = (p_m - q[rows, at]).clamp_min(0)
    empty = residual.sum(dim=-1, keepdim=True) <= 0  # p == q up to rounding: the residual is p itself
    return m, _inverse_cdf(torch.where(empty, p_m, residual), u_resample)


def _iterate(model, decoder, win: _Window, state, generators, cfg, guided, kept, start: int) -> None:
    """One forward over every row's window, then verification and redrafting."""
    width, n, device = win.width, win.n, win.codes.device
    offsets = torch.arange(width, device=device)
    active = win.accepted < n
    a = win.accepted
    ids = torch.cat([win.pending()[:, None], win.drafts[:, :-1]], dim=1) + start  # [B,W]
    grid = (a - 1)[:, None] + offsets
    rows = ids.shape[0]
    copies = state.attention_mask.shape[0] // rows  # 2 with CFG rows
    slots = (state.length + grid).repeat(copies, 1)
    pos = state.position_ids + (a[:, None] + offsets).repeat(copies, 1)
    embeds = _embeds(model, ids.repeat(copies, 1), grid.repeat(copies, 1))
    last_slot = state.length + int(a.max()) - 1 + width - 1
    step = guided(decoder.step(embeds, pos, slots, last_slot), a)  # [B,W,K]: p_t for position a + t
    p = _distribution(step, cfg.temperature, cfg.top_k, cfg.top_p)

    draws = torch.stack([torch.rand(3 * width + 1, generator=g, device=g.device) if bool(act) else
                         torch.zeros(3 * width + 1) for g, act in zip(generators, active.tolist())]).to(device)
    u_accept, u_draft, u_init, u_resample = draws[:, :width], draws[:, width:2 * width], \
        draws[:, 2 * width:3 * width], draws[:, -1]
    drafts, q = win.drafts, win.proposals
    m, resampled = verify(p, q, drafts, (a[:, None] + offsets) < n, u_accept, u_resample)
    rejected = active & (m < width) & (a + m < n)

    new_codes = torch.where(offsets[None] == m[:, None], resampled[:, None], drafts)
    keep = active[:, None] & ((offsets[None] < m[:, None]) | ((offsets[None] == m[:, None]) & rejected[:, None]))
    target = a[:, None] + offsets
    win.codes.scatter_(1, target, torch.where(keep, new_codes, win.codes.gather(1, target)))
    if kept is not None:
        index = target[..., None].expand(-1, -1, kept.shape[-1])
        kept.scatter_(1, index, torch.where(keep[..., None], step, kept.gather(1, index)))

    shift = torch.where(active, m + rejected.long(), torch.zeros_like(m))
    source = offsets[None] + shift[:, None]  # new window slot j holds old slot j + shift
    seen = source < width
    source = source.clamp(max=width - 1)
    jacobi = _inverse_cdf(p, u_draft).gather(1, source)
    fresh = (u_init * win.codebook).long().clamp(max=win.codebook - 1)
    win.drafts = torch.where(seen, jacobi, fresh)
    uniform = torch.full_like(q, 1.0 / win.codebook)
    win.proposals = torch.where(seen[..., None], p.gather(1, source[..., None].expand(-1, -1, p.shape[-1])),
                                uniform)
    win.accepted = (a + shift).clamp(max=n)
