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

    ``pooling="avg"`` averages every position (image models);
    ``pooling="last"`` takes the last time step (causal models, so a window's
    prediction depends on nothing after its end); ``pooling="avg_last"``
    concatenates the average over every position with the last time step
    (non-causal sequence models: the window's summary and its newest bars,
    where a forecast's signal is freshest), so the linear map reads 2·C
    numbers. ``pooling="none"`` expects an already flat (B, C) vector.
    """

    POOLINGS = ("avg", "last", "avg_last", "none")

    def __init__(self, in_features: int, pooling: str = "avg", dropout: float = 0.0):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"MultiTaskHead: pooling must be one of {self.POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(2 * in_features if pooling == "avg_last" else in_features, HEAD_WIDTH)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.pooling == "last":
            return features[:, :, -1]
        if self.pooling == "avg":
            return features.flatten(2).mean(-1)
        if self.pooling == "avg_last":
            return torch.cat([features.mean(-1), features[:, :, -1]], dim=1)
        return features

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout(p=0) is the identity; skip the module call on the hot path.
        return self.dropout(x) if self.dropout.p > 0 else x

    def forward(self, features: torch.Tensor) -> HeadOutput:
        return split_head(self.linear(self._drop(self.pool(features))), dim=1)

    def per_step(self, features: torch.Tensor) -> HeadOutput:
        """Outputs at every time step of a (B, C, T) map: (B, 3, T) and (B, T)."""
        if self.pooling == "avg_last":
            raise ValueError("MultiTaskHead: per-step outputs need a per-position head, not pooling 'avg_last'")
        raw = self.linear(self._drop(features.transpose(1, 2))).transpose(1, 2)
        return split_head(raw, dim=1)

