"""Losses and metrics for training the tokenizer models.

VQ: reconstruction + codebook + commitment (beta, 0.25 in LlamaGen) + optional
entropy (LlamaGen's ``compute_entropy_loss``: low per-sample entropy, high
batch-average entropy, which spreads assignments over the codebook).
TokLIP: SigLIP's pairwise sigmoid loss plus optional distillation to a teacher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "l2",
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pixel loss between [B,3,H,W] tensors; ``kind`` is ``"l2"`` or ``"l1"``.

    ``weight`` ([B,1,H,W]) multiplies each pixel's loss before the mean over all pixels."""
    if kind not in ("l2", "l1"):
        raise ValueError(f"reconstruction loss kind must be 'l2' or 'l1', got {kind!r}")
    diff = recon.float() - target.float()
    per_pixel = diff.pow(2) if kind == "l2" else diff.abs()
    if weight is not None:
        per_pixel = per_pixel * weight
    return per_pixel.mean()


def codebook_losses(z: torch.Tensor, z_q: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook loss, commitment loss) for encoder outputs ``z`` and their codes ``z_q`` (same shape).

    The codebook loss moves the codes towards the (fixed) encoder outputs; the
    commitment loss, scaled by ``beta``, keeps the encoder near its codes."""
    codebook = torch.mean((z_q - z.detach()) ** 2)
    commit = beta * torch.mean((z_q.detach() - z) ** 2)
    return codebook, commit


def entropy_loss(affinity: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Sample entropy minus batch-average entropy of softmax(affinity / T).

    Args:
        affinity: [M, K] similarity of M vectors to K codes (higher = closer).
    """
    logits = affinity.reshape(-1, affinity.shape[-1]) / temperature
    probs = logits.softmax(dim=-1)
    log_probs = logits.log_softmax(dim=-1)
    sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    avg_probs = probs.mean(dim=0)
    avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
    return sample_entropy - avg_entropy


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of [B,3,H,W] images in [-1, 1] (measured on the [0, 1] scale) -> [B]."""
    a = (recon.clamp(-1, 1) + 1) / 2
    b = (target.clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP pairwise sigmoid loss (Zhai et al. 2023), summed over pairs, averaged over images.

    Args:
        image_emb, text_emb: [B, D] l2-normalised; row i of each is a matching pair.
        logit_scale: scalar, already exponentiated; logit_bias: scalar.
    """
    logits = logit_scale * image_emb @ text_emb.t() + logit_bias
    labels = 2 * torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Feature distillation to a frozen teacher; shapes [..., D] must match.

    ``"cosine"``: mean (1 - cos); ``"mse"``: mean squared error."""
    if student.shape != teacher.shape:
        raise ValueError(f"distillation: student features {tuple(student.shape)} and teacher features "
                         f"{tuple(teacher.shape)} differ in shape")
    teacher = teacher.detach()
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    raise ValueError(f"distillation kind must be 'cosine' or 'mse', got {kind!r}")
