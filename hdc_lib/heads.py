"""Projection head g: the map from backbone features to the contrastive embedding space."""

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """GAP (if given a feature map) -> Linear -> BatchNorm1d -> ReLU -> Linear -> L2 normalise.

    The head of both HDC and DCLR, a SimCLR/MoCo-v2 style MLP (docs/methods.md, "Notation and
    shared parts"). The BatchNorm is our choice (the official DCLR heads have none); the first
    Linear has no bias because the BatchNorm right after it would cancel one.

    Args:
        in_dim: channels C of the input.
        hidden_dim: width of the hidden layer (default: ``in_dim``).
        out_dim: embedding dimension (128 in both papers).
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C) or a feature map (B, C, T, H, W), pooled over (T, H, W) first. Returns (B, out_dim),
        each row of unit L2 norm."""
        if x.dim() == 5:
            x = x.mean(dim=(2, 3, 4))
        elif x.dim() != 2:
            raise ValueError(f"heads.py: expected (B, C) or (B, C, T, H, W), got shape {tuple(x.shape)}")
        return F.normalize(self.mlp(x), dim=1)
