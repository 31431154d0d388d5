"""Projector from visual features (TokLIP tokens or VQ code embeddings) to the LLM hidden size."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class ProjectorConfig:
    kind: Literal["mlp", "linear"] = "mlp"
    depth: int = 2  # linear layers in the MLP (LLaVA-1.5's mlp2x_gelu is depth 2)
    hidden_size: int | None = None  # None: the LLM hidden size

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"projector.depth must be >= 1, got {self.depth}")


class Projector(nn.Module):
    """``[..., in_dim] -> [..., out_dim]``: a linear map or a GELU MLP."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int, zero_init_last: bool = False):
        super().__init__()
        depth = 1 if cfg.kind == "linear" else cfg.depth
        hidden = cfg.hidden_size or out_dim
        dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)
        if zero_init_last:
            # Starts as an exact no-op addition, so switching the feature path on does
            # not perturb a model that already works without it.
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
