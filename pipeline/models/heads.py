"""Shared multi-task heads: direction, expected return, volatility, confidence.

All outputs come from one linear map of the pooled features (6 numbers per
sample), then split: 3 direction logits (down / flat / up), an expected
return, a non-negative expected volatility (softplus) and a confidence /
position size in [0, 1] (sigmoid).

The loss that trains them lives in one place: :func:`pipeline.training.losses.multitask_loss`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

DIRECTIONS = ("down", "flat", "up")
HEAD_WIDTH = 6  # 3 logits + return + volatility + confidence


class HeadOutput(NamedTuple):
    """Model outputs. Per-window: (B, 3) and (B,); per-step: (B, 3, T) and (B, T)."""

    direction_logits: torch.Tensor
    expected_return: torch.Tensor
    expected_volatility: torch.Tensor
    confidence: torch.Tensor


def split_head(raw: torch.Tensor, dim: int = 1) -> HeadOutput:
    """Turn the 6 raw head numbers along ``dim`` into a :class:`HeadOutput`."""
    # narrow / select views: fewer autograd nodes than split + squeeze, same values.
    return HeadOutput(
        raw.narrow(dim, 0, 3),
        raw.select(dim, 3),
        F.softplus(raw.select(dim, 4)),
        torch.sigmoid(raw.select(dim, 5)),
    )


class MultiTaskHead(nn.Module):
    """Pool a feature map and predict the four targets.

    ``pooling="avg"`` averages every position (non-causal models);
    ``pooling="last"`` takes the last time step (causal models, so a window's
    prediction depends on nothing after its end). ``pooling="none"`` expects
    an already flat (B, C) vector.
    """

    def __init__(self, in_features: int, pooling: str = "avg", dropout: float = 0.0):
        super().__init__()
        if pooling not in ("avg", "last", "none"):
            raise ValueError(f"MultiTaskHead: pooling must be 'avg', 'last' or 'none', got {pooling!r}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, HEAD_WIDTH)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.pooling == "last":
            return features[:, :, -1]
        if self.pooling == "avg":
            return features.flatten(2).mean(-1)
        return features

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout(p=0) is the identity; skip the module call on the hot path.
        return self.dropout(x) if self.dropout.p > 0 else x

    def forward(self, features: torch.Tensor) -> HeadOutput:
        return split_head(self.linear(self._drop(self.pool(features))), dim=1)

    def per_step(self, features: torch.Tensor) -> HeadOutput:
        """Outputs at every time step of a (B, C, T) map: (B, 3, T) and (B, T)."""
        raw = self.linear(self._drop(features.transpose(1, 2))).transpose(1, 2)
        return split_head(raw, dim=1)

