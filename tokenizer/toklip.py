"""TokLIP: a causal ViT over frozen VQ codes ("token encoder") plus a SigLIP text tower.

Module tree and parameter names equal TencentARC/TokLIP's open_clip
``CustomTextCLIP`` with the timm trunk ``vit_so400m_patch16_toklip_{256,384}``:
``visual.trunk.{vq, vq_table, vq_mapping, pos_embed, blocks.*, norm, attn_pool}``,
``text.{token_embedding, positional_embedding, transformer.resblocks.*, ln_final,
text_projection}``, ``logit_scale``, ``logit_bias``, so ``TokLIP_S_256.pt`` /
``TokLIP_L_384.pt`` load strictly. Behaviour follows the original: the code
vectors are the VQ's l2-normalised codebook rows; ``vq_act`` is exact GELU while
blocks, pooling MLP and text tower use tanh GELU; the ViT is causal (token i sees
codes 0..i), the attention pool and the text tower attend over all tokens.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from unified_ar.config import to_dict
from unified_ar.tokenizer.attention import attention, check_backend
from unified_ar.tokenizer.losses import distillation_loss, siglip_loss
from unified_ar.tokenizer.vq import (VQ_PRESETS, VQConfig, VQModel, load_strict, read_config_json,
                                     read_torch_checkpoint, unwrap_state_dict)


@dataclass
class TokLIPVisionConfig:
    """timm VisionTransformer names; ``img_size // patch_size`` is the VQ code grid side."""

    embed_dim: int = 1152
    depth: int = 27
    num_heads: int = 16
    mlp_ratio: float = 3.7362
    img_size: int = 256
    patch_size: int = 16
    causal: bool = True  # TokLIP's vit_causal_mask

    @property
    def num_tokens(self) -> int:
        return (self.img_size // self.patch_size) ** 2


@dataclass
class TokLIPTextConfig:
    """open_clip CLIPTextCfg names (SigLIP: no causal mask, pooled at the last position)."""

    width: int = 1152
    heads: int = 16
    layers: int = 27
    mlp_ratio: float = 3.7362
    vocab_size: int = 256000
    context_length: int = 64
    pool_type: str = "last"  # "last" or "first"


@dataclass
class TokLIPConfig:
    vision_cfg: TokLIPVisionConfig = field(default_factory=TokLIPVisionConfig)
    text_cfg: TokLIPTextConfig = field(default_factory=TokLIPTextConfig)
    vq_cfg: VQConfig = field(default_factory=VQConfig)
    init_logit_scale: float = math.log(10.0)  # SigLIP's initialisation
    init_logit_bias: float = -10.0
    norm_eps: float = 1e-6
    attn_backend: str = "sdpa"
    # distillation to a frozen teacher given to the constructor (0 = off)
    distill_weight: float = 0.0
    distill_kind: str = "cosine"  # "cosine" or "mse"

    def __post_init__(self):
        v = self.vision_cfg
        if v.img_size % v.patch_size:
            raise ValueError(f"vision_cfg: img_size {v.img_size} is not a multiple of patch_size {v.patch_size}")
        if v.patch_size != self.vq_cfg.downsample_factor:
            raise ValueError(f"vision_cfg.patch_size {v.patch_size} must equal the VQ downsampling factor "
                             f"{self.vq_cfg.downsample_factor}")
        if v.embed_dim % v.num_heads or self.text_cfg.width % self.text_cfg.heads:
            raise ValueError("embed_dim / width must be divisible by num_heads / heads")
        if self.text_cfg.pool_type not in ("last", "first"):
            raise ValueError(f"text_cfg.pool_type must be 'last' or 'first', got {self.text_cfg.pool_type!r}")
        if self.distill_kind not in ("cosine", "mse"):
            raise ValueError(f"distill_kind must be 'cosine' or 'mse', got {self.distill_kind!r}")

    @property
    def embed_dim(self) -> int:
        """Joint image-text space D: the trunk's width (the official model has no image projection)."""
        return self.vision_cfg.embed_dim


def _so400m(img_size: int) -> TokLIPConfig:
    return TokLIPConfig(vision_cfg=TokLIPVisionConfig(img_size=img_size), text_cfg=TokLIPTextConfig(),
                        vq_cfg=replace(VQ_PRESETS["VQ-16"]))


TOKLIP_PRESETS: dict[str, TokLIPConfig] = {
    "TokLIP-S-256": _so400m(256),
    "TokLIP-L-384": _so400m(384),
    "TokLIP-shapes": TokLIPConfig(
        vision_cfg=TokLIPVisionConfig(embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0, img_size=96, patch_size=16),
        text_cfg=TokLIPTextConfig(width=64, heads=4, layers=2, mlp_ratio=4.0, vocab_size=192, context_length=40),
        vq_cfg=replace(VQ_PRESETS["VQ-shapes"])),
}


def toklip_config(preset: str | TokLIPConfig, **overrides) -> TokLIPConfig:
    """A preset with keyword overrides replacing fields of whichever part owns the name.

    ``depth=2, layers=2`` shrinks both towers; names both parts own (``mlp_ratio``)
    need ``vision_cfg={...}`` / ``text_cfg={...}``; ``vq_cfg={...}`` edits the VQ."""
    if isinstance(preset, str):
        if preset not in TOKLIP_PRESETS:
            raise ValueError(f"unknown TokLIP preset {preset!r} (choose from {', '.join(TOKLIP_PRESETS)})")
        preset = TOKLIP_PRESETS[preset]
    parts = {"vision_cfg": {}, "text_cfg": {}, "vq_cfg": {}}
    top = {}
    vision_names = {f.name for f in fields(TokLIPVisionConfig)}
    text_names = {f.name for f in fields(TokLIPTextConfig)}
    for key, value in overrides.items():
        if key in parts:
            parts[key].update(value)
        elif key in {f.name for f in fields(TokLIPConfig)}:
            top[key] = value
        elif key in vision_names and key in text_names:
            raise ValueError(f"override {key!r} is ambiguous; pass vision_cfg={{{key!r}: ...}} or text_cfg={{...}}")
        elif key in vision_names:
            parts["vision_cfg"][key] = value
        elif key in text_names:
            parts["text_cfg"][key] = value
        else:
            raise ValueError(f"unknown TokLIP config field {key!r}")
    nested = {name: replace(getattr(preset, name), **vals) for name, vals in parts.items()}
    return replace(preset, **nested, **top)


class CodeFeatures(NamedTuple):
    """``tokens``: per-code features [B,N,d] (causal); ``pooled``: attention-pooled embedding [B,D]."""

    tokens: torch.Tensor
    pooled: torch.Tensor


@dataclass
class TokLIPCache:
    """Per-layer keys/values [B,H,t,Dh] of the codes seen so far; ``length`` = t."""

    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]
    length: int = 0


@dataclass
class TokLIPOutput:
    loss: torch.Tensor
    image_emb: torch.Tensor  # [B,D] l2-normalised
    text_emb: torch.Tensor  # [B,D] l2-normalised
    metrics: dict[str, float]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class Mlp(nn.Module):
    """timm Mlp: fc1 -> tanh GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(_gelu_tanh(self.fc1(x)))


class Attention(nn.Module):
    """timm Attention (fused qkv with bias, output proj); optional KV cache for causal extension."""

    def __init__(self, dim: int, num_heads: int, causal: bool, backend: str):
        super().__init__()
        self.num_heads, self.causal, self.backend = num_heads, causal, backend
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cache: TokLIPCache | None = None, layer: int = 0) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if cache.keys[layer] is not None:
                k = torch.cat([cache.keys[layer], k], dim=2)
                v = torch.cat([cache.values[layer], v], dim=2)
            cache.keys[layer], cache.values[layer] = k, v
        out = attention(q, k, v, causal=self.causal, backend=self.backend)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-LN transformer block (timm names: norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, causal: bool, eps: float, backend: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, causal, backend)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, cache: TokLIPCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


class AttentionPoolLatent(nn.Module):
    """timm AttentionPoolLatent (SigLIP 'map' head): one learned query attends over all tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, backend: str):
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.latent = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,N,d] -> [B,d]."""
        b, n, c = x.shape
        h, dh = self.num_heads, c // self.num_heads
        q = self.q(self.latent.expand(b, -1, -1)).view(b, 1, h, dh).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, h, dh).permute(2, 0, 3, 1, 4)
        out = self.proj(attention(q, k, v, causal=False, backend=self.backend).transpose(1, 2).reshape(b, 1, c))
        out = out + self.mlp(self.norm(out))
        return out[:, 0]


class TokLIPTrunk(nn.Module):
    """Frozen VQ -> code vectors -> MLP (exact GELU) -> + pos_embed -> causal blocks -> norm."""

    def __init__(self, config: TokLIPConfig, vq: VQModel | None = None):
        super().__init__()
        v, eps, backend = config.vision_cfg, config.norm_eps, config.attn_backend
        if vq is not None and vq.config != config.vq_cfg:
            raise ValueError(f"the given VQ model's config {vq.config} differs from TokLIPConfig.vq_cfg {config.vq_cfg}")
        self.vq = vq if vq is not None else VQModel(config.vq_cfg)
        self.vq.requires_grad_(False)
        self.vq_table = nn.Linear(config.vq_cfg.codebook_embed_dim, 4 * v.embed_dim)
        self.vq_act = nn.GELU()  # exact, unlike the blocks
        self.vq_mapping = nn.Linear(4 * v.embed_dim, v.embed_dim)
        self.pos_embed = nn.Parameter(torch.randn(1, v.num_tokens, v.embed_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(v.embed_dim, v.num_heads, v.mlp_ratio, v.causal, eps, backend)
                                    for _ in range(v.depth))
        self.norm = nn.LayerNorm(v.embed_dim, eps=eps)
        self.attn_pool = AttentionPoolLatent(v.embed_dim, v.num_heads, v.mlp_ratio, eps, backend)

    def embed(self, codes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """codes [B,k] long at positions start..start+k-1 -> block inputs [B,k,d]."""
        n = self.pos_embed.shape[1]
        if start + codes.shape[1] > n:
            raise ValueError(f"{start + codes.shape[1]} codes exceed the {n} positions of pos_embed")
        x = self.vq_mapping(self.vq_act(self.vq_table(self.vq.quantize.lookup(codes))))
        return x + self.pos_embed[:, start:start + codes.shape[1]]

    def forward(self, codes: torch.Tensor, cache: TokLIPCache | None = None) -> torch.Tensor:
        """codes [B,k] -> per-token features [B,k,d]; with ``cache`` they continue the cached prefix."""
        x = self.embed(codes, cache.length if cache is not None else 0)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += codes.shape[1]
        return self.norm(x)


class TextAttention(nn.Module):
    """nn.MultiheadAttention's parameter names (in_proj_weight/bias, out_proj), our kernels."""

    def __init__(self, width: int, heads: int, backend: str):
        super().__init__()
        self.heads, self.backend = heads, backend
        self.in_proj_weight = nn.Parameter(torch.randn(3 * width, width) * width ** -0.5)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.out_proj(attention(q, k, v, causal=False, backend=self.backend).transpose(1, 2).reshape(b, n, c))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, eps: float, backend: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = TextAttention(width, heads, backend)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU(approximate="tanh"))
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """open_clip TextTransformer as configured for SigLIP: no causal mask, last-token pooling, biased projection."""

    def __init__(self, config: TokLIPConfig):
        super().__init__()
        t, eps = config.text_cfg, config.norm_eps
        self.config = t
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(torch.randn(t.context_length, t.width) * 0.01)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            ResidualAttentionBlock(t.width, t.heads, t.mlp_ratio, eps, config.attn_backend) for _ in range(t.layers))
        self.ln_final = nn.LayerNorm(t.width, eps=eps)
        self.text_projection = nn.Linear(t.width, config.embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B,L] (L <= context_length, padded as the tokenizer pads) -> [B,D] (not normalised)."""
        if ids.dim() != 2 or ids.shape[1] > self.config.context_length:
            raise ValueError(f"expected ids [B,L<={self.config.context_length}], got shape {tuple(ids.shape)}")
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]
        for block in self.transformer.resblocks:
            x = block(x)
        x = self.ln_final(x)
        pooled = x[:, -1] if self.config.pool_type == "last" else x[:, 0]
        return self.text_projection(pooled)


class TokLIP(nn.Module):
    """The TokLIP model: ``visual.trunk`` (token encoder over VQ codes), ``text``, ``logit_scale``, ``logit_bias``.

    ``teacher`` (optional, frozen, not saved): a module mapping pixels [B,3,H,W] to
    [B,D] embeddings, distilled into the pooled image embedding when
    ``config.distill_weight > 0``."""

    def __init__(self, config: TokLIPConfig, vq: VQModel | None = None, teacher: nn.Module | None = None):
        super().__init__()
        check_backend(config.attn_backend, "TokLIPConfig.attn_backend")
        if config.distill_weight > 0 and teacher is None:
            raise ValueError("TokLIPConfig.distill_weight > 0 needs a teacher module (TokLIP(config, teacher=...))")
        self.config = config
        self.visual = nn.Module()
        self.visual.trunk = TokLIPTrunk(config, vq)
        self.text = TextTransformer(config)
        # shape [1], not open_clip's [] : DeepSpeed's initial parameter broadcast cannot view a
        # 0-dim tensor as bytes; convert_official_state_dict reshapes the official scalars
        self.logit_scale = nn.Parameter(torch.full((1,), config.init_logit_scale))
        self.logit_bias = nn.Parameter(torch.full((1,), config.init_logit_bias))
        # kept out of the module tree so it is neither saved nor trained
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.tokenizer = None

    @property
    def vq(self) -> VQModel:
        return self.visual.trunk.vq

    @property
    def feature_dim(self) -> int:
        """d, the width of the per-token features."""
        return self.config.vision_cfg.embed_dim

    def train(self, mode: bool = True) -> "TokLIP":
        super().train(mode)
        self.vq.eval()  # the VQ is frozen: its quantizer must not record usage
        return self

    def _flat_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() == 3:
            codes = codes.flatten(1)
        if codes.dim() != 2:
            raise ValueError(f"expected codes [B,h,w] or [B,N], got shape {tuple(codes.shape)}")
        n = self.config.vision_cfg.num_tokens
        if codes.shape[1] > n:
            raise ValueError(f"{codes.shape[1]} codes per image exceed the model's {n} positions")
        return codes

    def encode_codes(self, codes: torch.Tensor) -> CodeFeatures:
        """codes [B,h,w] or [B,N] (raster order; a prefix N' < h*w is allowed) -> (tokens [B,N,d], pooled [B,D])."""
        tokens = self.visual.trunk(self._flat_codes(codes))
        return CodeFeatures(tokens, self.visual.trunk.attn_pool(tokens))

    def encode_image(self, pixels: torch.Tensor) -> CodeFeatures:
        """pixels [B,3,H,W] in [-1,1] -> (tokens [B,N,d], pooled [B,D]) through the frozen VQ."""
        with torch.no_grad():
            codes = self.vq.encode(pixels)
        return self.encode_codes(codes)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B,L] -> [B,D] text embedding (not normalised)."""
        return self.text(ids)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts -> ids [B, context_length] with the attached tokenizer, padded on the right and
        truncated like SigLIP's (the text tower pools the last position), whatever side the
        tokenizer pads on by default (transformers 5 loads a sentencepiece LlamaTokenizer left-padding)."""
        if self.tokenizer is None:
            raise ValueError("no text tokenizer attached: set model.tokenizer or pass tokenizer= when loading")
        ctx = self.config.text_cfg.context_length
        out = self.tokenizer(list(texts), padding="max_length", padding_side="right", truncation=True,
                             max_length=ctx, return_tensors="pt")
        return out["input_ids"]

    def new_cache(self, batch: int = 1) -> TokLIPCache:
        """An empty KV cache for ``extend`` (``batch`` is the batch size the cache will hold)."""
        if not self.config.vision_cfg.causal:
            raise ValueError("incremental features need a causal token encoder (vision_cfg.causal=True)")
        depth = self.config.vision_cfg.depth
        return TokLIPCache(keys=[None] * depth, values=[None] * depth, length=0)

    def extend(self, cache: TokLIPCache, codes: torch.Tensor) -> torch.Tensor:
        """Append codes [B,k] to ``cache``; return their features [B,k,d] (equal to the full causal pass)."""
        if codes.dim() != 2:
            raise ValueError(f"expected codes [B,k], got shape {tuple(codes.shape)}")
        return self.visual.trunk(codes, cache)

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """[B,D] x [M,D] (normalised) -> [B,M] SigLIP logits."""
        return self.logit_scale.exp() * image_emb @ text_emb.t() + self.logit_bias

    def forward(self, batch: dict) -> TokLIPOutput:
        """SigLIP loss for a batch ``{"codes": [B,N] | "pixels": [B,3,H,W], "input_ids": [B,L]}``.

        With distillation on, ``batch["pixels"]`` feeds the teacher."""
        if "codes" in batch:
            pooled = self.encode_codes(batch["codes"]).pooled
        elif "pixels" in batch:
            pooled = self.encode_image(batch["pixels"]).pooled
        else:
            raise KeyError("TokLIP batch needs 'codes' or 'pixels'")
        image_emb = F.normalize(pooled, dim=-1)
        text_emb = F.normalize(self.encode_text(batch["input_ids"]), dim=-1)
        # open_clip clamps the scale at 100 for stability
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        loss = siglip_loss(image_emb, text_emb, scale, self.logit_bias)
        metrics = {"siglip_loss": loss.item(), "logit_scale": scale.item(), "logit_bias": self.logit_bias.item()}
        if self.config.distill_weight > 0:
            if "pixels" not in batch:
                raise KeyError("distillation needs batch['pixels'] for the teacher")
            with torch.no_grad():
                target = self._teacher[0](batch["pixels"])
            dist = distillation_loss(pooled, target, self.config.distill_kind)
            metrics["distill_loss"] = dist.item()
            loss = loss + self.config.distill_weight * dist
        return TokLIPOutput(loss, image_emb.detach(), text_emb.detach(), metrics)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (official key names, VQ included)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(to_dict(self.config), indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(directory / "tokenizer")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, teacher: nn.Module | None = None, **overrides) -> "TokLIP":
        """Load a ``save_pretrained`` directory (strict); ``overrides`` as in ``toklip_config``."""
        directory = Path(directory)
        config = toklip_config(read_config_json(TokLIPConfig, directory / "config.json"), **overrides)
        model = cls(config, teacher=teacher)
        load_strict(model, load_file(directory / "model.safetensors"), str(directory))
        if (directory / "tokenizer").is_dir():
            model.tokenizer = load_text_tokenizer(directory / "tokenizer")
        return model.eval()

    @classmethod
    def from_official_checkpoint(cls, path: str | Path, preset: str = "TokLIP-S-256", tokenizer=None,
                                 **overrides) -> "TokLIP":
        """Load TencentARC's ``TokLIP_S_256.pt`` / ``TokLIP_L_384.pt`` strictly.

        Accepts a plain state dict or ``{"state_dict": ...}``, with or without the DDP
        ``module.`` prefix. ``tokenizer``: a tokenizer object or a local directory for
        ``AutoTokenizer`` (the SigLIP2 Gemma tokenizer), or None."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: TokLIP checkpoint not found")
        state = convert_official_state_dict(unwrap_state_dict(read_torch_checkpoint(path), path, keys=("state_dict",)))
        model = cls(toklip_config(preset, **overrides))
        load_strict(model, state, str(path))
        if tokenizer is not None:
            model.tokenizer = load_text_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        return model.eval()


VQ_PREFIX = "visual.trunk.vq."


def check_same_vq(toklip: "TokLIP", vq: VQModel, source: str) -> None:
    """TokLIP's embedded VQ (``visual.trunk.vq.*``) must be ``vq``, the same weights and config:
    TokLIP's features are only meaningful for the codes of the VQ it was trained on."""
    if toklip.config.vq_cfg != vq.config:
        raise ValueError(f"{source}: TokLIP's vq_cfg {toklip.config.vq_cfg} differs from the model's VQ {vq.config}")
    theirs, ours = toklip.vq.weights_sha256(), vq.weights_sha256()
    if theirs != ours:
        raise ValueError(f"{source}: TokLIP's embedded VQ (sha256 {theirs[:12]}) is not the model's VQ "
                         f"(sha256 {ours[:12]}); give the VQ checkpoint TokLIP was trained with")


def convert_official_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official TokLIP state dict in our layout: the DDP ``module.`` prefix dropped and the
    0-dim ``logit_scale`` / ``logit_bias`` as shape [1]; every name is kept."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v.reshape(1) if k in ("logit_scale", "logit_bias") and v.dim() == 0 else v for k, v in state.items()}


def load_text_tokenizer(path: str | Path):
    """A text tokenizer from a local directory (AutoTokenizer, no network)."""
    from transformers import AutoTokenizer  # heavy import, only when a tokenizer is asked for

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: tokenizer directory not found")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
