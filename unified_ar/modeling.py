"""The unified model: an ``AutoModelForCausalLM`` over the merged vocabulary, the VQ and the
TokLIP token encoder (frozen by default), and projectors from visual features to the LLM.

- Comprehension: each run of ``<|image|>`` placeholders takes the projected features
  of the matching ``image_codes`` row (TokLIP tokens, or raw VQ code vectors with
  ``comprehension_features: vq``, an ablation).
- Generation: image ids are ordinary tokens. With ``semantic_gen_input`` the input at
  a position whose token is code ``c_j`` of an image is
  ``embed(id(c_j)) + gen_projector(TokLIP_causal(c_0..c_j)[j])``: the feature of the
  codes already in the input. The causal encoder makes this identical at training
  time (one pass over all codes) and sampling time (TokLIP's cache, one code a step).
- With ``image_position_embedding`` every image position (a generated image's ids and a shown
  image's feature slots) also gets a learned embedding of its grid index 0..N-1, so a token
  knows which cell it is in without counting from ``<|image_start|>`` through RoPE.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from unified_ar.config import from_dict, to_dict
from unified_ar.generation_config import GenerationConfig
from unified_ar.llm import (LLMConfig, LLMStep, build_llm, cache_keyword, check_attention_backend,
                            enable_activation_checkpointing, llm_hidden_size)
from unified_ar.processor import ImageSpec, UnifiedARProcessor
from unified_ar.projector import Projector, ProjectorConfig
from unified_ar.sequences import IGNORE
from unified_ar.vocab import VocabLayout, resize_llm_vocab

CONFIG_NAME = "unified_config.json"


@dataclass
class PartConfig:
    """A VQ or TokLIP: a preset (random init), or a ``path`` (our directory or an official ``.pt``).

    ``config``: the part's whole config (``VQConfig`` / ``TokLIPConfig`` fields), written by
    ``save_pretrained``; the part is then built from it and its weights come from the model
    folder, so a folder never refers to a file outside itself."""

    preset: str | None = None
    path: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    trainable: bool = False
    config: dict[str, Any] | None = None


@dataclass
class UnifiedConfig:
    llm: LLMConfig = field(default_factory=LLMConfig)
    vq: PartConfig = field(default_factory=lambda: PartConfig(preset="VQ-shapes"))
    toklip: PartConfig = field(default_factory=lambda: PartConfig(preset="TokLIP-shapes"))
    tokenizer: str | None = None  # directory loadable by AutoTokenizer (required by from_config)
    image_size: int = 96
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    # what the LLM reads for an image it is shown: TokLIP features or the VQ's code vectors through
    # the projector, or "tokens": the LLM's own input embeddings of the image ids it generates
    # (Chameleon-style; understanding and generation then share those embeddings; no projector)
    comprehension_features: Literal["toklip", "vq", "tokens"] = "toklip"
    semantic_gen_input: bool = False
    # a learned embedding of the grid index added at every image position (docs/MODEL.md)
    image_position_embedding: bool = False
    text_loss_weight: float = 1.0
    image_loss_weight: float = 1.0


@dataclass
class UnifiedOutput:
    """``loss``/``text_loss``/``image_loss``: scalars (None without labels); ``logits``: [B,L,V]."""

    loss: torch.Tensor | None
    text_loss: torch.Tensor | None
    image_loss: torch.Tensor | None
    logits: torch.Tensor
    cache: Any = None
    metrics: dict[str, float] = field(default_factory=dict)


def build_vq(part: PartConfig, device) -> nn.Module:
    """The VQ of ``part`` on ``device``: a model folder's own config, a preset (random init), our
    directory or an official ``.pt`` (with ``preset``). Pretokenize builds it the same way."""
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQConfig, VQModel, preset_config, read_config_json

    if part.config is not None:  # a model folder's own VQ: weights loaded by from_pretrained
        with torch.device(device):
            return VQModel(replace(from_dict(VQConfig, part.config, "vq.config"), **part.overrides))
    path = Path(part.path) if part.path else None
    if torch.device(device).type == "meta" or path is None:
        if path is not None and path.is_dir():
            cfg = replace(read_config_json(VQConfig, path / "config.json"), **part.overrides)
        else:
            cfg = preset_config(VQ_PRESETS, part.preset, **part.overrides)
        with torch.device(device):
            return VQModel(cfg)
    is_dir = path.is_dir()
    return VQModel.from_pretrained(path, None if is_dir else part.preset, **part.overrides)


def _build_toklip(part: PartConfig, device, vq: nn.Module) -> nn.Module:
    """TokLIP sharing the model's VQ module (its weights exist once): from a model folder's own
    config, a preset (random init), or a path (our TokLIP directory or an official checkpoint,
    whose embedded VQ must be the model's VQ: checked by weight hash)."""
    from unified_ar.tokenizer import toklip as tk
    from unified_ar.tokenizer.vq import read_config_json

    if part.config is not None:  # weights loaded by from_pretrained
        cfg = tk.toklip_config(from_dict(tk.TokLIPConfig, part.config, "toklip.config"), **part.overrides)
        with torch.device(device):
            return tk.TokLIP(cfg, vq=vq)
    path = Path(part.path) if part.path else None
    if torch.device(device).type == "meta" or path is None:
        if path is not None and path.is_dir():
            cfg = tk.toklip_config(read_config_json(tk.TokLIPConfig, path / "config.json"), **part.overrides)
        else:
            cfg = tk.toklip_config(part.preset, **part.overrides)
        if cfg.vq_cfg != vq.config:
            raise ValueError(f"toklip: its vq_cfg {cfg.vq_cfg} differs from the model's VQ {vq.config}; "
                             "set toklip.overrides.vq_cfg to match vq")
        with torch.device(device):
            return tk.TokLIP(cfg, vq=vq)
    # Loaded whole (with its own VQ copy, briefly), then checked and pointed at the model's VQ: so
    # the random stream the freshly initialised parts draw from after it (projectors, position
    # embeddings) is what it was before TokLIP shared the VQ, and a seed trains what it trained.
    if path.is_dir():
        toklip = tk.TokLIP.from_pretrained(path, **part.overrides)
    else:
        toklip = tk.TokLIP.from_official_checkpoint(path, part.preset, **part.overrides)
    tk.check_same_vq(toklip, vq, str(path))
    toklip.visual.trunk.vq = vq
    return toklip


def _runs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of True in a [B,L] mask: flat start indices and lengths, in row-major order."""
    start = mask & ~F.pad(mask[:, :-1], (1, 0), value=False)
    end = mask & ~F.pad(mask[:, 1:], (0, 1), value=False)  # rows end with False, so runs never cross rows
    starts = start.flatten().nonzero().squeeze(1)
    ends = end.flatten().nonzero().squeeze(1)
    return starts, ends - starts + 1


def packed_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Block-diagonal causal additive mask [B,1,L,L] from ``segment_ids`` [B,L] (-1 = pad).

    transformers returns a 4D mask unchanged, so eager and sdpa both use it as is.
    Pad positions attend to themselves only (a fully masked row would be NaN in eager)."""
    L = segment_ids.shape[1]
    pos = torch.arange(L, device=segment_ids.device)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    allowed = same & (segment_ids[:, :, None] >= 0) & (pos[None, :, None] >= pos[None, None, :])
    allowed |= torch.eye(L, dtype=torch.bool, device=segment_ids.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class UnifiedARModel(nn.Module):
    """LLM + VQ + TokLIP + projectors. Build with :meth:`from_config` or :meth:`from_pretrained`."""

    def __init__(self, config: UnifiedConfig, tokenizer, device: str | torch.device = "cpu", meta_ok: bool = False,
                 text_vocab_size: int | None = None):
        """``tokenizer=None`` with ``text_vocab_size`` builds for size estimates only (model-info on meta)."""
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        # how the model is prompted and sampled (generation_config.json in a saved folder)
        self.generation_config = GenerationConfig()
        self.vq = build_vq(config.vq, device)
        grid = self.vq.grid_size(config.image_size)
        spec = ImageSpec(config.image_size, grid, self.vq.config.codebook_size, vq_sha256=None)
        self.processor = UnifiedARProcessor(spec, tokenizer)
        if tokenizer is None:
            if text_vocab_size is None:
                raise ValueError("UnifiedARModel: give a tokenizer (or text_vocab_size for a size estimate)")
            self.layout = VocabLayout.sized(text_vocab_size, self.vq.config.codebook_size)
        else:
            self.layout = self.processor.layout
        self.llm = build_llm(config.llm, self.layout.text_vocab_size, device, meta_ok=meta_ok)
        self._cache_keyword = cache_keyword(self.llm)
        self.layout = resize_llm_vocab(self.llm, self.layout)
        if tokenizer is not None:
            self.processor.layout = self.layout
        hidden = llm_hidden_size(self.llm)
        needs_toklip = config.comprehension_features == "toklip" or config.semantic_gen_input
        self.toklip = _build_toklip(config.toklip, device, self.vq) if needs_toklip else None
        self.projector = None
        if config.comprehension_features != "tokens":  # "tokens" reads the LLM's own embeddings
            in_dim = (self.toklip.feature_dim if config.comprehension_features == "toklip"
                      else self.vq.config.codebook_embed_dim)
            with torch.device(device):
                self.projector = Projector(config.projector, in_dim, hidden)
        with torch.device(device):
            self.gen_projector = (
                Projector(config.projector, self.toklip.feature_dim, hidden, zero_init_last=True)
                if config.semantic_gen_input else None
            )
        self.grid = (self.vq.grid_size(config.image_size),) * 2
        self.image_pos_embed = None
        if config.image_position_embedding:
            with torch.device(device):
                self.image_pos_embed = nn.Embedding(self.num_image_tokens, hidden)
            nn.init.normal_(self.image_pos_embed.weight, std=0.02)
        for part, cfg in ((self.vq, config.vq), (self.toklip, config.toklip)):
            if part is not None and not cfg.trainable:
                part.requires_grad_(False)
                part.eval()
        # None: dummy passes on multi-rank training forwards only (embed); True / False forces them
        self.uniform_modules: bool | None = None
        # LoRA adapters on the LLM (unified_ar.train.lora.apply_lora); save_pretrained writes them merged or apart
        self.lora_adapter = None
        # a VQ built from a folder's record is random until from_pretrained loads it (and hashes it then)
        if torch.device(device).type != "meta" and config.vq.config is None:
            self.refresh_vq_identity()

    def refresh_vq_identity(self) -> str:
        """Record the VQ's weight hash in the processor (after the VQ's weights changed) and return it."""
        self.processor.image = replace(self.processor.image, vq_sha256=self.vq.weights_sha256())
        return self.processor.image.vq_sha256

    @classmethod
    def from_config(cls, config: UnifiedConfig, tokenizer=None, device="cpu", meta_ok: bool = False):
        """Build from a config; the tokenizer is loaded from ``config.tokenizer`` unless given."""
        inline = [name for name in ("vq", "toklip") if getattr(config, name).config is not None]
        if inline:
            raise ValueError(f"{', '.join(inline)}.config: a model folder's record of its parts, whose weights are "
                             "in that folder; load it with from_pretrained / init_from, or give a preset or path")
        if tokenizer is None:
            if config.tokenizer is None:
                raise ValueError("UnifiedConfig.tokenizer: a tokenizer directory is required")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, local_files_only=True)
        return cls(config, tokenizer, device, meta_ok=meta_ok)

    # -- frozen parts stay in eval mode (no dropout / usage statistics) -------------------
    def train(self, mode: bool = True):
        super().train(mode)
        for part, cfg in ((self.vq, self.config.vq), (self.toklip, self.config.toklip)):
            if part is not None and not cfg.trainable:
                part.eval()
        return self

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing of the LLM's decoder layers (what ``train.gradient_checkpointing``
        asks the engine for; the same as ``model.llm.gradient_checkpointing``). The VQ and TokLIP
        are small and frozen by default, so they are not checkpointed."""
        enable_activation_checkpointing(self.llm)

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # -- visual features ------------------------------------------------------------------
    def comprehension_embeds(self, image_codes: torch.Tensor) -> torch.Tensor:
        """image_codes [M,N] (or [M,h,w]) -> projected features [M,N,H]."""
        codes = image_codes.reshape(image_codes.shape[0], *self.grid)
        if self.config.comprehension_features == "tokens":
            return self.llm.get_input_embeddings()(self.layout.codes_to_ids(codes.flatten(1)))
        if self.config.comprehension_features == "toklip":
            feats = self.toklip.encode_codes(codes)[0]
        else:
            feats = self.vq.code_embeddings(codes).flatten(2).transpose(1, 2)
        return self.projector(feats.to(self.projector.net[0].weight.dtype))

    def gen_embeds(self, ids: torch.Tensor, toklip_tokens: torch.Tensor | None, first_index: int) -> torch.Tensor:
        """Input embeddings of image ids [B,k] at grid indices ``first_index``.. (+ projected causal
        TokLIP tokens [B,k,d]) -> [B,k,H]."""
        embeds = self.llm.get_input_embeddings()(ids)
        if self.image_pos_embed is not None:
            index = torch.arange(first_index, first_index + ids.shape[1], device=ids.device)
            embeds = embeds + self.image_pos_embed(index).to(embeds.dtype)
        if self.gen_projector is None:
            return embeds
        if toklip_tokens is None:
            raise ValueError("semantic_gen_input is on: image ids need their causal TokLIP tokens")
        return embeds + self._project_gen(toklip_tokens).to(embeds.dtype)

    def _project_gen(self, toklip_tokens: torch.Tensor) -> torch.Tensor:
        return self.gen_projector(toklip_tokens.to(self.gen_projector.net[0].weight.dtype))

    def _gen_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Causal TokLIP tokens [R*N, d] of every image-id run in ``input_ids`` (row-major)."""
        starts, lengths = _runs(self.layout.is_image_id(input_ids))
        n = self.num_image_tokens
        if bool((lengths != n).any()):
            raise ValueError(f"semantic_gen_input: image-id runs of lengths {lengths.tolist()}; each must hold "
                             f"exactly {n} codes ({self.grid[0]}x{self.grid[1]})")
        flat = input_ids.flatten()
        idx = starts[:, None] + torch.arange(n, device=flat.device)
        codes = self.layout.ids_to_codes(flat[idx])
        return self.toklip.encode_codes(codes.view(-1, *self.grid))[0].reshape(-1, self.toklip.feature_dim)

    def embed(self, input_ids: torch.Tensor, image_codes: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B,L] (+ image_codes [M,N], one row per ``<|image|>`` run) -> inputs_embeds [B,L,H].

        Every visual module of the config runs on every call that may train, in the same order
        (comprehension features + projector, TokLIP + ``gen_projector``, ``image_pos_embed``),
        whatever the micro-batch holds: a path with nothing to do runs on one dummy image (codes
        0) or grid index 0 and adds ``0 * result.sum()``, so embeddings and gradients are what
        they were (the dummy's gradients are zeros). Under ZeRO-3 each module's forward
        all-gathers its parameters and its backward reduces their gradients, so ranks whose
        micro-batches differ (captions on one, conversations on the other) must still run the
        same modules, or gloo fails with a collective mismatch (or hangs); data-parallel ranks
        (ZeRO-0/1/2) must reduce the gradients of the same parameters. The dummies run when
        :meth:`runs_uniform_modules` says so: ``uniform_modules`` (the training engine sets it
        for several ranks or ZeRO >= 1), else a training forward with more than one rank. A
        single ZeRO-0 rank runs only what its micro-batch needs, as it always did: a parameter
        without work keeps no gradient, so a plain optimizer does not step it (a zero gradient
        would move it by its momentum). Inference (eval mode under
        ``no_grad`` / ``inference_mode``: sampling, evaluation) skips the dummies; a multi-rank
        ZeRO-3 forward must run in train mode or with grad enabled."""
        uniform = self.runs_uniform_modules()
        embeds = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.layout.image_placeholder_id
        _, lengths = _runs(slots)
        m = 0 if image_codes is None else image_codes.shape[0]
        if len(lengths) != m or int(slots.sum()) != m * self.num_image_tokens:
            raise ValueError(
                f"image placeholder mismatch: input_ids hold {len(lengths)} <|image|> run(s) with "
                f"{int(slots.sum())} placeholder tokens, but image_codes has {m} image(s) x "
                f"{self.num_image_tokens} tokens"
            )
        dummy_codes = input_ids.new_zeros(1, self.num_image_tokens)
        if m:
            feats = self.comprehension_embeds(image_codes).to(embeds.dtype)
            embeds = embeds.masked_scatter(slots[..., None], feats)
        elif uniform:
            embeds = embeds + 0 * self.comprehension_embeds(dummy_codes).sum().to(embeds.dtype)
        image = self.layout.is_image_id(input_ids)
        if self.gen_projector is not None and bool(image.any()):
            extra = self._project_gen(self._gen_features(input_ids)).to(embeds.dtype)
            embeds = embeds.masked_scatter(image[..., None], embeds[image] + extra)
        elif self.gen_projector is not None and uniform:
            feats = self.toklip.encode_codes(dummy_codes.view(1, *self.grid))[0]
            embeds = embeds + 0 * self._project_gen(feats).sum().to(embeds.dtype)
        if self.image_pos_embed is not None:
            # shown images, then generated ones: with uniform modules always two calls (a dummy
            # grid index 0 for a kind the micro-batch lacks), so every rank calls it as often
            for mask in (slots, image):
                if bool(mask.any()):
                    extra = self.image_pos_embed(self._grid_index(mask)).to(embeds.dtype)
                    embeds = embeds.masked_scatter(mask[..., None], embeds[mask] + extra)
                elif uniform:
                    dummy = self.image_pos_embed(input_ids.new_zeros(1))
                    embeds = embeds + 0 * dummy.sum().to(embeds.dtype)
        return embeds

    def runs_uniform_modules(self) -> bool:
        """Whether :meth:`embed` runs every visual module on this forward (see there):
        ``uniform_modules`` if set, else a training forward in a process group of several ranks."""
        if not (self.training or torch.is_grad_enabled()):
            return False
        if self.uniform_modules is not None:
            return self.uniform_modules
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _grid_index(self, mask: torch.Tensor) -> torch.Tensor:
        """For each True of ``mask`` [B,L] (row-major), its index within its run: the grid index."""
        _, lengths = _runs(mask)
        if bool((lengths > self.num_image_tokens).any()):
            raise ValueError(f"image_position_embedding: image runs of lengths {lengths.tolist()}; none may "
                             f"exceed {self.num_image_tokens} ({self.grid[0]}x{self.grid[1]})")
        run_start = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        return torch.arange(int(lengths.sum()), device=mask.device) - run_start

    # -- forward --------------------------------------------------------------------------
    def run_llm(self, embeds, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                logits_to_keep=0) -> LLMStep:
        """One LLM pass on ``embeds`` [B,L,H]; returns its logits and KV cache."""
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=use_cache, logits_to_keep=logits_to_keep, **{self._cache_keyword: cache})
        return LLMStep(out.logits, getattr(out, self._cache_keyword))

    def _attention(self, batch: dict, dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        position_ids = batch.get("position_ids")
        segment_ids = batch.get("segment_ids")
        if segment_ids is None:
            return batch.get("attention_mask"), position_ids
        if position_ids is None:
            raise ValueError("packed batch: segment_ids given without position_ids")
        if self.config.llm.attn_implementation == "flash_attention_2":
            # varlen FlashAttention: transformers finds sample boundaries where position_ids restart
            return None, position_ids
        return packed_causal_mask(segment_ids, dtype), position_ids

    def forward(self, batch: dict) -> UnifiedOutput:
        """``batch``: input_ids [B,L], optional labels [B,L], attention_mask [B,L], position_ids [B,L],
        segment_ids [B,L] (-1 pad), image_codes [M,N]. Returns :class:`UnifiedOutput`."""
        input_ids = batch["input_ids"]
        embeds = self.embed(input_ids, batch.get("image_codes"))
        attention_mask, position_ids = self._attention(batch, embeds.dtype)
        out = self.run_llm(embeds, attention_mask, position_ids)
        labels = batch.get("labels")
        if labels is None:
            return UnifiedOutput(None, None, None, out.logits, out.cache)
        return self._loss(out.logits, labels, batch.get("segment_ids"), out.cache)

    def _loss(self, logits, labels, segment_ids, cache) -> UnifiedOutput:
        targets = labels[:, 1:].clone()
        if segment_ids is not None:
            # never predict the first token of the next packed sample
            targets[segment_ids[:, 1:] != segment_ids[:, :-1]] = IGNORE
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                             ignore_index=IGNORE, reduction="none").view_as(targets)
        valid = targets != IGNORE
        is_image = self.layout.is_image_id(targets) | (targets == self.layout.image_end_id)
        text_mask, image_mask = valid & ~is_image, valid & is_image
        # an empty part is the sum over no tokens: 0, but still on the graph, so a micro-batch with no
        # target at all still runs a backward (through every module) like the other ranks' micro-batches
        text_loss = ce[text_mask].mean() if bool(text_mask.any()) else ce[text_mask].sum()
        image_loss = ce[image_mask].mean() if bool(image_mask.any()) else ce[image_mask].sum()
        loss = self.config.text_loss_weight * text_loss + self.config.image_loss_weight * image_loss
        metrics = {"text_loss": float(text_loss.detach()), "image_loss": float(image_loss.detach()),
                   "text_tokens": float(text_mask.sum()), "image_tokens": float(image_mask.sum())}
        return UnifiedOutput(loss, text_loss, image_loss, logits, cache, metrics)

    # -- save / load ----------------------------------------------------------------------
    def _part_state(self, name: str, module: nn.Module) -> dict[str, torch.Tensor] | None:
        """The tensors written for child ``name``; None: the module is written as it is. TokLIP's
        embedded VQ is the model's VQ (shared), so it is written once, in ``vq.safetensors``."""
        if name != "toklip":
            return None
        from unified_ar.tokenizer.toklip import VQ_PREFIX

        return {k: v.detach().contiguous() for k, v in module.state_dict().items() if not k.startswith(VQ_PREFIX)}

    def _saved_config(self) -> dict:
        """``unified_config.json``: every part inline (the LLM's HF config, the VQ's and TokLIP's
        whole configs), so the folder is rebuilt from itself, wherever it is copied."""
        data = to_dict(self.config)
        # The LLM is rebuilt from its own HF config on load (random init, then our weights),
        # so a checkpoint never needs the original LLM directory.
        data["llm"] = {**data["llm"], "path": None, "preset": None, "hf_config": self.llm.config.to_dict()}
        for name, part in (("vq", self.vq), ("toklip", self.toklip)):
            if part is not None:
                data[name] = {**data[name], "path": None, "preset": None, "overrides": {},
                              "config": to_dict(part.config)}
        data["tokenizer"] = None
        return data

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a self-contained folder: ``unified_config.json``, one safetensors file per part
        (VQ and TokLIP included), the processor (``processor_config.json`` + the tokenizer) and
        ``generation_config.json`` (prompt format and sampling defaults)."""
        from safetensors.torch import save_file, save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self._saved_config(), indent=2) + "\n")
        for name, module in self.named_children():
            if name == "llm" and self.lora_adapter is not None:
                self.lora_adapter.save_llm(directory)  # merged, or the adapter + its base (train/lora.py)
                continue
            state = self._part_state(name, module)
            if state is None:
                save_model(module, str(directory / f"{name}.safetensors"))
            else:
                save_file(state, str(directory / f"{name}.safetensors"))
        self.refresh_vq_identity()
        self.processor.save_pretrained(directory)
        self.generation_config.save(directory)
        return directory

    def _load_part(self, name: str, module: nn.Module, file: Path, device) -> None:
        from safetensors.torch import load_file, load_model

        from unified_ar.tokenizer.vq import load_strict

        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing weights of part {name!r}")
        expected = self._part_state(name, module)
        if expected is None:
            load_model(module, str(file), strict=True, device=str(device))
            return
        state = load_file(str(file), device=str(device))
        shared = {k: v for k, v in module.state_dict().items() if k not in expected}
        load_strict(module, {**state, **shared}, str(file))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        **llm_overrides) -> "UnifiedARModel":
        """Load a :meth:`save_pretrained` directory (strict; no network) onto ``device``.
        ``llm_overrides`` replace LLMConfig fields (e.g. ``attn_implementation="eager"``)."""
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a unified model directory (no {CONFIG_NAME})")
        config = from_dict(UnifiedConfig, json.loads(path.read_text()), str(path))
        config = replace(config, llm=replace(config.llm, **llm_overrides))
        processor = UnifiedARProcessor.from_pretrained(directory)
        generation = GenerationConfig.load(directory)
        model = cls(config, processor.tokenizer, device=device)
        model.generation_config = generation
        model.to(device)
        from unified_ar.train.lora import is_adapter_folder, load_adapter_llm

        for name, module in model.named_children():
            if name == "llm" and is_adapter_folder(directory):  # save: adapter (needs peft)
                load_adapter_llm(model, directory, device)
                continue
            model._load_part(name, module, directory / f"{name}.safetensors", device)
        model.refresh_vq_identity()
        model.processor.image.check_same(processor.image, f"{directory}'s processor_config.json",
                                         "the folder's VQ weights do not match its own record")
        return model.eval()

    # -- the Python API: draw, answer, chat (thin over unified_ar.sampling) ----------------
    def draw(self, caption: str | list[str], seed: int | list[int] = 0, **settings):
        """Text-to-image: a PIL image for a caption, a list of them for a list of captions.

        ``seed``: one per caption, or a base (caption ``i`` gets ``seed + i``); the same seed draws
        the same image. ``settings``: :class:`~unified_ar.sampling.ImageSamplingConfig` fields
        (``guidance_scale`` (None: no CFG), ``temperature``, ``top_k``, ``top_p``, ...) over the
        model's ``generation_config.json``."""
        from unified_ar.sampling import ImageSamplingConfig, generate_images

        captions = [caption] if isinstance(caption, str) else list(caption)
        cfg = ImageSamplingConfig.for_model(self, **settings, decode_images=True)
        images = generate_images(self, captions, seed, cfg).images
        return images[0] if isinstance(caption, str) else images

    def answer(self, image, question: str | list[str], **settings):
        """Answer a question about an image (PIL image, file path, pixels [3,H,W] or codes): a str,
        or a list for a list of questions (then ``image`` is a list, one per question). Greedy, at
        most ``answer_max_new_tokens`` of the model's ``generation_config.json``, as ``eval-vqa``
        answers; ``settings``: :class:`~unified_ar.sampling.TextSamplingConfig` fields on top."""
        from unified_ar.sampling import TextSamplingConfig, answer_questions

        text = self.generation_config.text
        cfg = TextSamplingConfig.for_model(self, **{"max_new_tokens": text.answer_max_new_tokens,
                                                    "temperature": 0.0, **settings})
        if isinstance(question, str):
            return answer_questions(self, [image], [question], cfg=cfg)[0]
        if not isinstance(image, (list, tuple)):
            raise ValueError("answer: a list of questions takes a list of images, one per question")
        return answer_questions(self, list(image), list(question), cfg=cfg)

    def _chat_inputs(self, messages: list[dict], images) -> tuple[list[int], torch.Tensor | None]:
        """Prompt ids of the next assistant turn and the codes [M,N] of ``images`` (PIL images, paths
        or codes, one per ``<image>`` in the messages, in order)."""
        from unified_ar.sampling import image_to_codes
        from unified_ar.sequences import IMAGE_MARK, normalize_messages

        images = list(images or [])
        marks = sum(m["content"].count(IMAGE_MARK) for m in normalize_messages(messages))
        if marks != len(images):
            raise ValueError(f"the messages hold {marks} {IMAGE_MARK} marker(s) for {len(images)} image(s)")
        codes = torch.stack([image_to_codes(self, x) for x in images]) if images else None
        return self.processor.chat_prompt(messages), codes

    def chat(self, messages: list[dict], images=None, seed: int = 0, **settings) -> str:
        """The assistant's reply to ``messages`` (``{"role", "content"}`` turns; ``<image>`` in a user
        turn places the next of ``images``). ``settings``: :class:`~unified_ar.sampling.TextSamplingConfig`
        fields over the model's ``generation_config.json``; ``seed`` matters when sampling."""
        from unified_ar.sampling import TextSamplingConfig, generate_text

        prompt, codes = self._chat_inputs(messages, images)
        cfg = TextSamplingConfig.for_model(self, **settings)
        return self.processor.decode(generate_text(self, [prompt], codes, cfg, seeds=seed)[0])

    def stream_chat(self, messages: list[dict], images=None, seed: int = 0, **settings):
        """:meth:`chat`, yielding the reply's text token by token; the pieces join to :meth:`chat`'s reply."""
        from unified_ar.sampling import TextSamplingConfig, stream_text

        prompt, codes = self._chat_inputs(messages, images)
        return stream_text(self, prompt, codes, TextSamplingConfig.for_model(self, **settings), seed)
