"""Muon for the hidden weight matrices, AdamW for everything else, as one torch optimizer.

Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks";
the scaled form of Liu et al., 2025, "Muon is Scalable for LLM Training") takes SGD
momentum with Nesterov look-ahead and replaces each matrix's update by its nearest
semi-orthogonal matrix, computed with a quintic Newton-Schulz iteration. The update is
then scaled by ``0.2 * sqrt(max(rows, cols))`` so that its RMS matches AdamW's, which
lets one learning rate (``train.lr``) serve both halves.

Which parameters take Muon is :func:`muon_matrices`: the weights of ``nn.Linear`` layers,
except a language model's output head (embeddings, the head, norms, biases and
convolutions take AdamW, as in the papers). Matrices of one shape are orthogonalised as
one batch in bf16 (tensor-core / AMX matrix units): on this project's 2-core CPU a step of
the demo's LLM costs 1.23x a fused-AdamW step (``bench_train --optimizers``, docs/TRAINING.md).

The engine hands this optimizer to DeepSpeed at ZeRO-0 only: ZeRO-1/2/3 keep parameters
as flat 1-D partitions, so no step could see a matrix (DeepSpeed's own ``Muon`` type does
the orthogonalisation inside its partitioning; docs/TRAINING.md).
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from unified_ar.train.engine import ADAMW_KERNEL

# quintic Newton-Schulz coefficients (Jordan et al.): the slope at zero is maximised
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(grads: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately ``U V^T`` of each ``grads[i] = U S V^T``: [B,m,n] -> [B,m,n] (bf16 iteration,
    returned in the input's dtype). The singular values come out in ~[0.7, 1.2], not exactly 1,
    which Muon tolerates by design."""
    a, b, c = NS_COEFFICIENTS
    x = grads.to(torch.bfloat16)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    if tall:
        x = x.mT
    return x.to(grads.dtype)


def muon_matrices(model: nn.Module) -> set[int]:
    """``id``s of the parameters Muon updates: ``nn.Linear`` weights, minus the output head of any
    submodule that has one (``get_output_embeddings()``, e.g. a transformers causal LM)."""
    heads = set()
    for module in model.modules():
        get_head = getattr(module, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        if isinstance(head, nn.Module) and getattr(head, "weight", None) is not None:
            heads.add(id(head.weight))
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} - heads


class MuonAdamW(torch.optim.Optimizer):
    """Param groups carry ``use_muon``; Muon groups step here, the others through an inner
    ``torch.optim.AdamW`` (the engine's kernel, ``ADAMW_KERNEL``), whose ``lr`` and ``weight_decay`` follow the outer group at
    every step (so an LR scheduler on this optimizer drives both halves).

    ``lr``, ``weight_decay`` (decoupled), ``betas`` and ``eps`` (AdamW's), ``momentum`` and
    ``ns_steps`` (Muon's)."""

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.95, ns_steps: int = 5):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum=momentum,
                        ns_steps=ns_steps, use_muon=False)
        super().__init__(groups, defaults)
        for group in self.param_groups:
            if group["use_muon"] and any(p.ndim != 2 for p in group["params"]):
                shapes = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
                raise ValueError(f"MuonAdamW: a use_muon group holds non-matrix parameters of shapes {shapes}")
        self._adam_groups = [g for g in self.param_groups if not g["use_muon"]]
        self._adamw = None
        if self._adam_groups:
            self._adamw = torch.optim.AdamW(
                [{"params": g["params"], "lr": g["lr"], "weight_decay": g["weight_decay"]} for g in self._adam_groups],
                lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **ADAMW_KERNEL)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
        if self._adamw is not None:
            for outer, inner in zip(self._adam_groups, self._adamw.param_groups):
                inner["lr"], inner["weight_decay"] = outer["lr"], outer["weight_decay"]
            self._adamw.step()
        return loss

    def _muon_step(self, group: dict) -> None:
        # one batch per shape, a tall matrix transposed into the batch of its wide twin
        by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor, bool]]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - group["momentum"])
            nesterov = p.grad.lerp(buf, group["momentum"])
            tall = p.shape[0] > p.shape[1]
            by_shape[tuple(sorted(p.shape))].append((p, nesterov.mT if tall else nesterov, tall))
        for (_, long), items in by_shape.items():
            updates = orthogonalize(torch.stack([u for _, u, _ in items]), group["ns_steps"])
            scale = 0.2 * math.sqrt(long)  # RMS of AdamW's update (Liu et al.)
            for (p, _, tall), update in zip(items, updates):
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.mT if tall else update, alpha=-group["lr"] * scale)

    def state_dict(self) -> dict:
        saved = super().state_dict()
        saved["adamw"] = None if self._adamw is None else self._adamw.state_dict()
        return saved

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        if "adamw" not in state_dict:
            raise ValueError("MuonAdamW.load_state_dict: this optimizer state has no 'adamw' part, so it is "
                             "not MuonAdamW's; was the checkpoint trained with train.optimizer adamw?")
        adamw = state_dict.pop("adamw")
        super().load_state_dict(state_dict)
        self._adam_groups = [g for g in self.param_groups if not g["use_muon"]]
        if (adamw is None) != (self._adamw is None):
            raise ValueError("MuonAdamW.load_state_dict: the saved optimizer and this one disagree on "
                             "whether any parameter takes AdamW")
        if self._adamw is not None:
            self._adamw.load_state_dict(adamw)
