"""LlamaGen's VQ tokenizer (pixels <-> codes), parameter-for-parameter.

The module tree and parameter names equal FoundationVision/LlamaGen
``tokenizer/tokenizer_image/vq_model.py`` (``encoder.conv_blocks.{i}.res.{j}``,
``quantize.embedding``, ``quant_conv`` ...), so the official ``vq_ds16_c2i.pt`` /
``vq_ds16_t2i.pt`` load strictly with no renaming. Pixels are in [-1, 1].
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from unified_ar.config import from_dict, to_dict
from unified_ar.tokenizer.attention import attention, check_backend, dense
from unified_ar.tokenizer.losses import codebook_losses, entropy_loss, psnr, reconstruction_loss

# LlamaGen registers a fixed 65536-long window of recent code assignments
USAGE_WINDOW = 65536
NORM_GROUPS = 32  # LlamaGen's GroupNorm(num_groups=32)


@dataclass
class VQConfig:
    """LlamaGen ``ModelArgs`` fields plus ``ch``, ``num_res_blocks`` and the attention backend."""

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    encoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    z_channels: int = 256
    dropout_p: float = 0.0
    ch: int = 128
    num_res_blocks: int = 2
    attn_backend: str = "sdpa"
    reconstruction_loss: str = "l2"
    # not in LlamaGen: every N training steps, codes unused since the last check are moved
    # onto encoder outputs of the batch, drawn by quantisation error (0 = off). Small data
    # needs it to escape the one-code collapse of a randomly initialised codebook.
    codebook_restart_every: int = 0
    # not in LlamaGen (fixed 32 there): GroupNorm groups. With few channels, 32 groups is a
    # per-channel instance norm that erases each image's absolute colour; small presets use fewer.
    norm_groups: int = NORM_GROUPS
    # not in LlamaGen: extra reconstruction weight on foreground pixels (colour differs from the
    # image's per-channel median, its background), decaying linearly to 0 at step
    # `foreground_loss_steps` (0: constant). On mostly-empty images a plain pixel loss first
    # learns brightness only (red, green and blue decode to one grey) and leaves that plateau
    # slowly; this weight breaks it (docs/TOKENIZER.md). 0 = off, as in LlamaGen.
    foreground_loss_weight: float = 0.0
    foreground_loss_steps: int = 0
    # not in LlamaGen: run the encoder on each f x f patch on its own (same weights and key
    # names), so equal patches get equal codes. The whole-image encoder lets an empty patch's
    # code carry its neighbours' detail. A patch is 1x1 at the lowest level, where GroupNorm
    # with several groups normalises each group's few channels away: use norm_groups 1 with it.
    # Off by default (LlamaGen's behaviour); the VQ-shapes preset uses it (docs/TOKENIZER.md).
    encoder_patch_local: bool = False
    # not in LlamaGen: the decoder's mirror image. Each code is decoded on its own into its f x f
    # patch (same weights and key names), so a code always draws the same pixels. With both
    # patch-local, training runs encoder, quantizer and decoder once per distinct patch of the
    # batch (the losses still weigh every position): exact, and several times cheaper on mostly
    # empty images. Off by default; the VQ-shapes preset uses it (docs/TOKENIZER.md, "Patch-local decoder").
    decoder_patch_local: bool = False

    def __post_init__(self):
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError("encoder_ch_mult and decoder_ch_mult must have the same length (same downsampling)")
        for name in ("encoder_ch_mult", "decoder_ch_mult"):
            for m in getattr(self, name):
                if (self.ch * m) % self.norm_groups:
                    raise ValueError(f"{name}: ch*mult = {self.ch * m} is not a multiple of "
                                     f"norm_groups = {self.norm_groups} (GroupNorm)")
        if self.foreground_loss_weight < 0 or self.foreground_loss_steps < 0:
            raise ValueError("foreground_loss_weight and foreground_loss_steps must be >= 0")
        if self.reconstruction_loss not in ("l2", "l1"):
            raise ValueError(f"reconstruction_loss must be 'l2' or 'l1', got {self.reconstruction_loss!r}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)


VQ_PRESETS: dict[str, VQConfig] = {
    "VQ-16": VQConfig(),
    "VQ-8": VQConfig(encoder_ch_mult=[1, 2, 2, 4], decoder_ch_mult=[1, 2, 2, 4]),
    # Shapes world: 96 px -> 6x6 codes; ~170 distinct 16x16 patches, so 256 codes suffice. No res
    # blocks in the encoder levels (1 per decoder level): the 96 px convs dominate CPU time.
    # Equals configs/vq/shapes.yaml.
    # patch-local encoder + entropy loss: a code per distinct 16x16 patch (docs/TOKENIZER.md, "Entropy loss")
    "VQ-shapes": VQConfig(codebook_size=256, codebook_embed_dim=8, z_channels=64, ch=32, num_res_blocks=0,
                          encoder_ch_mult=[1, 1, 2, 2, 4], decoder_ch_mult=[1, 1, 2, 2, 4],
                          codebook_restart_every=20, foreground_loss_weight=30.0, foreground_loss_steps=1500,
                          encoder_patch_local=True, decoder_patch_local=True, norm_groups=1,
                          entropy_loss_ratio=0.1),
}


@dataclass
class VQOutput:
    """``loss``: scalar; ``recon``: [B,3,H,W]; ``codes``: [B,h,w] long; ``metrics``: floats for logging."""

    loss: torch.Tensor | None
    recon: torch.Tensor
    codes: torch.Tensor
    metrics: dict[str, float]


def grid_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """images [N,C,H,W] -> the ``patch`` x ``patch`` cells of their grid, flattened [N*h*w, C*patch*patch]
    (row-major per image, the order of the codes)."""
    n, c, height, width = images.shape
    h, w = height // patch, width // patch
    return images.reshape(n, c, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5).reshape(n * h * w, c * patch * patch)


def fold_patches(patches: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`grid_patches`: [n*h*w, C, p, p] (row-major per image) -> [n, C, h*p, w*p]."""
    c, p = patches.shape[1], patches.shape[-1]
    return patches.reshape(n, h, w, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h * p, w * p)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections."""

    def __init__(self, channels: int, backend: str, groups: int):
        super().__init__()
        self.backend = backend
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (dense(proj(hn).reshape(b, 1, c, h * w).transpose(-1, -2)) for proj in (self.q, self.k, self.v))
        out = attention(q, k, v, causal=False, backend=self.backend)  # [b, 1, hw, c]
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch convs pad symmetrically; LlamaGen pads right/bottom only
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int, config: VQConfig) -> nn.ModuleList:
    g = config.norm_groups
    return nn.ModuleList([ResnetBlock(channels, channels, config.dropout_p, g),
                          AttnBlock(channels, config.attn_backend, g),
                          ResnetBlock(channels, channels, config.dropout_p, g)])


class Encoder(nn.Module):
    """[B,3,H,W] -> [B,z_channels,H/f,W/f]; attention at the lowest resolution."""

    def __init__(self, config: VQConfig):
        super().__init__()
        mult, ch, n = config.encoder_ch_mult, config.ch, config.num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        self.conv_blocks = nn.ModuleList()
        block_in = ch
        for level, m in enumerate(mult):
            block, last = nn.Module(), level == len(mult) - 1
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(n):
                block.res.append(ResnetBlock(block_in, ch * m, config.dropout_p, config.norm_groups))
                block_in = ch * m
                if last:
                    block.attn.append(AttnBlock(block_in, config.attn_backend, config.norm_groups))
            if not last:
                block.downsample = Downsample(block_in)
            self.conv_blocks.append(block)
        self.mid = _mid(block_in, config)
        self.norm_out = _norm(block_in, config.norm_groups)
        self.conv_out = nn.Conv2d(block_in, config.z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level, block in enumerate(self.conv_blocks):
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if level != len(self.conv_blocks) - 1:
                h = block.downsample(h)
        for layer in self.mid:
            h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """[B,z_channels,h,w] -> [B,3,h*f,w*f]; blocks listed from the lowest resolution up."""

    def __init__(self, config: VQConfig):
        super().__init__()
        mult, ch, n = config.decoder_ch_mult, config.ch, config.num_res_blocks
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, 1, 1)
        self.mid = _mid(block_in, config)
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):
            block, lowest = nn.Module(), level == len(mult) - 1
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(n + 1):
                block.res.append(ResnetBlock(block_in, ch * mult[level], config.dropout_p, config.norm_groups))
                block_in = ch * mult[level]
                if lowest:
                    block.attn.append(AttnBlock(block_in, config.attn_backend, config.norm_groups))
            if level != 0:
                block.upsample = Upsample(block_in)
            self.conv_blocks.append(block)
        self.norm_out = _norm(block_in, config.norm_groups)
        self.conv_out = nn.Conv2d(block_in, 3, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for layer in self.mid:
            h = layer(h)
        for level, block in enumerate(self.conv_blocks):
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if level != len(self.conv_blocks) - 1:
                h = block.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer over an (optionally l2-normalised) codebook ``embedding``."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.codebook_size, config.codebook_embed_dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / config.codebook_size, 1.0 / config.codebook_size)
            if config.codebook_l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        if config.codebook_show_usage:
            self.register_buffer("codebook_used", torch.zeros(USAGE_WINDOW))
        # restart bookkeeping is not part of the checkpoint format (non-persistent)
        self.register_buffer("hits", torch.zeros(config.codebook_size), persistent=False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long), persistent=False)

    def codebook(self) -> torch.Tensor:
        """[K, dim] code vectors as the decoder sees them."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.config.codebook_l2_norm else w

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [...] long -> vectors [..., dim]."""
        if codes.dtype != torch.long:
            raise TypeError(f"codes must be torch.long, got {codes.dtype}")
        return self.codebook()[codes]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B,dim,h,w] -> (z normalised [B,h,w,dim], z_q [B,h,w,dim], codes [B,h,w], distances [M,K])."""
        # nearest-code search in fp32 also under bf16 autocast (which would run the matmul in bf16:
        # training codes could then differ from eval's, and the entropy loss's logits, -dist / 0.01,
        # would carry bf16 rounding of the distances x 100)
        with torch.autocast(z.device.type, enabled=False):
            z = z.permute(0, 2, 3, 1).float()
            if self.config.codebook_l2_norm:
                z = F.normalize(z, dim=-1)
            emb = self.codebook().float()
            flat = z.reshape(-1, z.shape[-1])
            dist = flat.pow(2).sum(1, keepdim=True) + emb.pow(2).sum(1) - 2 * flat @ emb.t()
        codes = dist.argmin(dim=1).view(z.shape[:-1])
        return z, emb[codes], codes, dist

    @torch.no_grad()
    def count_hits(self, codes: torch.Tensor) -> None:
        """Count code assignments since the last restart check (training only)."""
        self.hits += torch.bincount(codes.flatten(), minlength=self.config.codebook_size).to(self.hits.dtype)
        self.steps += 1

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor) -> int:
        """When a restart check is due, move codes unhit since the last one onto rows of the encoder
        outputs ``z`` [B,dim,h,w] drawn with probability proportional to their squared distance to the
        nearest code (k-means++ style: the worst-served vectors, not the plentiful background, get the
        freed codes); return how many moved. Runs before quantizing, so the in-place codebook edit
        precedes this step's autograd graph."""
        every = self.config.codebook_restart_every
        if every <= 0 or int(self.steps) == 0 or int(self.steps) % every:
            return 0
        dead = (self.hits == 0).nonzero().flatten()
        if dead.numel():
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).to(self.embedding.weight.dtype)
            if self.config.codebook_l2_norm:
                flat = F.normalize(flat, dim=-1)
            error = torch.cdist(flat, self.codebook()).min(dim=1).values.pow(2) + 1e-12
            pick = flat[torch.multinomial(error, dead.numel(), replacement=True)]
            pick = pick + 0.01 * pick.norm(dim=-1, keepdim=True) * torch.randn_like(pick)  # distinct copies
            self.embedding.weight[dead] = F.normalize(pick, dim=-1) if self.config.codebook_l2_norm else pick
        self.hits.zero_()
        return int(dead.numel())

    @torch.no_grad()
    def record_usage(self, codes: torch.Tensor) -> float:
        """Push ``codes`` into the usage window; return the fraction of the codebook seen in it."""
        flat = codes.flatten().to(self.codebook_used.dtype)[-USAGE_WINDOW:]
        n = flat.numel()
        self.codebook_used[:-n] = self.codebook_used[n:].clone()
        self.codebook_used[-n:] = flat
        return torch.unique(self.codebook_used).numel() / self.config.codebook_size


class VQModel(nn.Module):
    """LlamaGen VQ model: ``encoder``, ``quant_conv``, ``quantize``, ``post_quant_conv``, ``decoder``."""

    def __init__(self, config: VQConfig):
        super().__init__()
        check_backend(config.attn_backend, "VQConfig.attn_backend")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    def weights_sha256(self) -> str:
        """The VQ's identity: :func:`weights_sha256` of its parameters (usage statistics, a
        buffer, do not change what the VQ encodes and are left out)."""
        return weights_sha256(dict(self.named_parameters()))

    def grid_size(self, image_size: int) -> int:
        """Side of the code grid for a square ``image_size`` input."""
        f = self.config.downsample_factor
        if image_size % f:
            raise ValueError(f"image size {image_size} is not a multiple of the VQ downsampling factor {f}")
        return image_size // f

    def _input_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Check the shape; cast to the weights' dtype (bf16 weights under DeepSpeed bf16, fp32 pixels)."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels [B,3,H,W] in [-1,1], got shape {tuple(pixels.shape)}")
        self.grid_size(pixels.shape[-1])
        self.grid_size(pixels.shape[-2])
        return pixels.to(self.encoder.conv_in.weight.dtype)

    def _distinct_patches(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [B,3,H,W] -> (each distinct f x f patch once [P,3,f,f], index [B*h*w] of every
        position's patch). An empty background repeats many times; a gather by ``index`` has a
        backward that sums the repeats' gradients, so results and gradients equal per-patch work."""
        f, c = self.config.downsample_factor, pixels.shape[1]
        distinct, index = torch.unique(grid_patches(pixels, f), dim=0, return_inverse=True)
        return distinct.reshape(-1, c, f, f), index

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B,3,H,W] -> encoder features [B,z_channels,H/f,W/f], per patch when
        ``encoder_patch_local``."""
        if not self.config.encoder_patch_local:
            return self.encoder(pixels)
        f = self.config.downsample_factor
        b, _, height, width = pixels.shape
        distinct, index = self._distinct_patches(pixels)
        z = self.encoder(distinct)  # [P, z, 1, 1]
        return z.flatten(1)[index].reshape(b, height // f, width // f, -1).permute(0, 3, 1, 2)

    def _latent(self, pixels: torch.Tensor, restart: bool = False):
        h = self.quant_conv(self._encode(self._input_pixels(pixels)))
        restarted = self.quantize.restart_dead(h) if restart else 0
        return (*self.quantize(h), restarted)

    def _reconstruct(self, pixels: torch.Tensor, restart: bool):
        """pixels -> (z, z_q [B,h,w,dim], codes [B,h,w], distances [B*h*w,K], restarted, recon [B,3,H,W]),
        the decoder reading z_q with a straight-through gradient to the encoder's z."""
        cfg = self.config
        if not (cfg.encoder_patch_local and cfg.decoder_patch_local):
            z, z_q, codes, dist, restarted = self._latent(pixels, restart)
            z_st = z + (z_q - z).detach()
            return z, z_q, codes, dist, restarted, self.decode_latent(z_st.permute(0, 3, 1, 2))
        # all per patch: run everything once per distinct patch, then gather to every position.
        # Equal patches have equal z, codes and targets, so the gathers' backward (a sum over the
        # repeats) gives the gradients of the per-position computation.
        pixels = self._input_pixels(pixels)
        f = cfg.downsample_factor
        b, _, height, width = pixels.shape
        h, w = height // f, width // f
        distinct, index = self._distinct_patches(pixels)
        latent = self.quant_conv(self.encoder(distinct))  # [P,dim,1,1]
        restarted = self.quantize.restart_dead(latent) if restart else 0
        z, z_q, codes, dist = self.quantize(latent)  # [P,1,1,dim], [P,1,1,dim], [P,1,1], [P,K]
        z, z_q = z.flatten(0, 2), z_q.flatten(0, 2)
        patches = self._decode_patches(z + (z_q - z).detach())
        grid = (b, h, w)
        return (z[index].reshape(*grid, -1), z_q[index].reshape(*grid, -1), codes.flatten()[index].reshape(grid),
                dist[index], restarted, fold_patches(patches[index], *grid))

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B,3,H,W] in [-1,1] -> codes [B,H/f,W/f] long."""
        return self._latent(pixels)[2]

    @staticmethod
    def _check_codes(codes: torch.Tensor) -> None:
        if codes.dim() != 3:
            raise ValueError(f"expected codes [B,h,w], got shape {tuple(codes.shape)}")

    def code_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B,h,w] long -> code vectors [B,dim,h,w] (what the decoder and TokLIP read)."""
        self._check_codes(codes)
        return self.quantize.lookup(codes).permute(0, 3, 1, 2).contiguous()

    def _decode_patches(self, z_q: torch.Tensor) -> torch.Tensor:
        """Code vectors [P,dim] -> their patches [P,3,f,f], each decoded alone (``decoder_patch_local``)."""
        return self.decoder(self.post_quant_conv(z_q[:, :, None, None].to(self.post_quant_conv.weight.dtype)))

    def decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q [B,dim,h,w] -> pixels [B,3,h*f,w*f]."""
        if not self.config.decoder_patch_local:  # the quantizer's fp32 vectors meet the weights' dtype
            return self.decoder(self.post_quant_conv(z_q.to(self.post_quant_conv.weight.dtype)))
        b, dim, h, w = z_q.shape
        return fold_patches(self._decode_patches(z_q.permute(0, 2, 3, 1).reshape(-1, dim)), b, h, w)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B,h,w] long -> pixels [B,3,h*f,w*f] (unclamped, ~[-1,1])."""
        if not self.config.decoder_patch_local:
            return self.decode_latent(self.code_embeddings(codes))
        self._check_codes(codes)
        distinct, index = torch.unique(codes, return_inverse=True)  # each distinct code decoded once
        patches = self._decode_patches(self.quantize.lookup(distinct))
        return fold_patches(patches[index.flatten()], *codes.shape)

    @property
    def takes_global_step(self) -> bool:
        """The training engine passes ``global_step`` in the batch (the foreground weight decays)."""
        return self.config.foreground_loss_weight > 0 and self.config.foreground_loss_steps > 0

    def foreground_weight(self, global_step: int | None) -> float:
        """The foreground loss weight at ``global_step`` (linear decay to 0, or constant)."""
        cfg = self.config
        if cfg.foreground_loss_weight == 0 or cfg.foreground_loss_steps == 0:
            return cfg.foreground_loss_weight
        if global_step is None:
            raise ValueError("foreground_loss_steps > 0 needs the batch's global_step (the training engine passes it)")
        return cfg.foreground_loss_weight * max(0.0, 1.0 - global_step / cfg.foreground_loss_steps)

    def forward(self, pixels: torch.Tensor | dict) -> VQOutput:
        """Reconstruct ``pixels`` [B,3,H,W] (or a batch dict holding them under "pixels", and
        ``global_step`` when :attr:`takes_global_step`, as the training engine passes it); in
        training mode also the VQ losses and their parts."""
        global_step = None
        if isinstance(pixels, dict):
            pixels, global_step = pixels["pixels"], pixels.get("global_step")
        z, z_q, codes, dist, restarted, recon = self._reconstruct(pixels, restart=self.training)
        metrics = {"psnr": psnr(recon.detach(), pixels).mean().item()}
        if not self.training:
            return VQOutput(None, recon, codes, metrics)
        cfg = self.config
        weight = self.foreground_weight(global_step)
        pixel_weight = None
        if weight > 0:  # plain loss + weight x foreground loss, as one weighted mean
            pixel_weight = 1.0 + weight * foreground_mask(pixels)
            metrics["foreground_weight"] = weight
        rec = reconstruction_loss(recon, pixels, cfg.reconstruction_loss, weight=pixel_weight)
        codebook, commit = codebook_losses(z, z_q, cfg.commit_loss_beta)
        loss = rec + codebook + commit
        if cfg.entropy_loss_ratio > 0:
            ent = cfg.entropy_loss_ratio * entropy_loss(-dist)
            loss = loss + ent
            metrics["entropy_loss"] = ent.item()
        metrics.update(recon_loss=rec.item(), codebook_loss=codebook.item(), commit_loss=commit.item())
        if cfg.codebook_show_usage:
            metrics["codebook_usage"] = self.quantize.record_usage(codes)
        if cfg.codebook_restart_every > 0:
            self.quantize.count_hits(codes)
            metrics["codes_restarted"] = float(restarted)
        return VQOutput(loss, recon, codes, metrics)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(to_dict(self.config), indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        return directory

    @classmethod
    def from_pretrained(cls, path: str | Path, preset: str | None = None, **overrides) -> "VQModel":
        """Load our ``save_pretrained`` directory, or an official LlamaGen ``.pt`` with ``preset`` (e.g. "VQ-16").

        ``overrides`` replace config fields (e.g. ``attn_backend="xformers"``); loading is strict."""
        path = Path(path)
        if path.is_dir():
            if preset is not None:
                raise ValueError(f"{path}: a save_pretrained directory carries its own config.json; drop preset=")
            config = read_config_json(VQConfig, path / "config.json")
            state = load_file(path / "model.safetensors")
        elif path.is_file():
            if preset is None:
                raise ValueError(f"{path}: an official checkpoint needs preset= (one of {', '.join(VQ_PRESETS)})")
            config = preset_config(VQ_PRESETS, preset)
            state = unwrap_state_dict(read_torch_checkpoint(path), path, keys=("ema", "model", "state_dict"))
        else:
            raise FileNotFoundError(f"{path}: no such VQ checkpoint file or directory")
        model = cls(replace(config, **overrides))
        load_strict(model, state, str(path))
        return model.eval()


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Identity of some weights: SHA-256 over each tensor's name, shape and float32 value bytes, in
    name order. Whatever dtype or device the weights were loaded in, the same weights give the
    same digest, so codes, a model and a TokLIP checkpoint can be checked to share one VQ."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def foreground_mask(pixels: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """[B,1,H,W] float: 1 where a pixel's colour differs (by > ``threshold`` in [-1,1] units in
    some channel) from its image's per-channel median colour, the background of a mostly-empty
    image."""
    background = pixels.flatten(2).median(dim=2).values[:, :, None, None]
    return ((pixels - background).abs().amax(dim=1, keepdim=True) > threshold).to(pixels.dtype)


def preset_config(presets: dict, name: str, **overrides):
    """A copy of preset ``name`` with ``overrides`` applied; unknown names list the presets."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(presets)})")
    return replace(presets[name], **overrides)


def read_config_json(cls, path: Path):
    """Build config dataclass ``cls`` from a JSON file; errors name the file and key."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config.json not found")
    return from_dict(cls, json.loads(path.read_text()), str(path))


def read_torch_checkpoint(path: Path) -> dict:
    """``torch.load`` a third-party ``.pt`` safely (weights only) on the CPU."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def unwrap_state_dict(obj: dict, path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: the first of ``keys`` present, else ``obj`` itself if all tensors."""
    for key in keys:
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError(f"{path}: no state dict found (looked for {', '.join(map(repr, keys))} or a plain tensor dict; "
                     f"top-level keys: {', '.join(list(obj)[:10])})")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` requiring identical names and shapes; the error lists every mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{source}: checkpoint does not match {type(module).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
        raise ValueError("\n  ".join(parts))
    module.load_state_dict(state, strict=True)
