"""Building blocks shared by the model zoo.

Every module that changes the time (or image) geometry describes itself with a
``geometry()`` method, so :func:`pipeline.models.geometry.receptive_field` can
walk a network without running it: plain convolutions and pools are read from
their kernel, dilation and stride; blocks combine their children in series
(:func:`compose`) or in parallel (:func:`parallel`).
"""

from __future__ import annotations

import dataclasses
import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Receptive field (in input steps) and total stride (jump) along one axis."""

    rf: int = 1
    jump: int = 1


IDENTITY = Geometry(1, 1)


def compose(*parts: Geometry) -> Geometry:
    """Geometry of layers applied one after the other."""
    rf, jump = 1, 1
    for part in parts:
        rf += (part.rf - 1) * jump
        jump *= part.jump
    return Geometry(rf, jump)


def parallel(*parts: Geometry) -> Geometry:
    """Geometry of branches whose outputs are added or concatenated."""
    jumps = {p.jump for p in parts}
    if len(jumps) != 1:
        raise ValueError(f"parallel branches must share one stride, got {sorted(jumps)}")
    return Geometry(max(p.rf for p in parts), parts[0].jump)


class CausalConv1d(nn.Conv1d):
    """Conv1d with left padding only: output step t sees inputs ≤ t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))


class WeightNormCausalConv1d(nn.Module):
    """Causal Conv1d with weight normalisation w = g · v / ‖v‖ (Salimans & Kingma).

    Written out (rather than torch parametrizations) so the module exports
    and its state dict holds plain ``v`` / ``g`` tensors.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel_size)
        self.kernel_size = (kernel_size,)
        self.dilation = (dilation,)
        self.stride = (1,)
        self.left_pad = (kernel_size - 1) * dilation
        self.v = nn.Parameter(conv.weight.detach().clone())
        self.g = nn.Parameter(conv.weight.detach().flatten(1).norm(dim=1).view(-1, 1, 1).clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, 1

    @property
    def weight(self) -> torch.Tensor:
        return self.g * self.v / self.v.flatten(1).norm(dim=1).view(-1, 1, 1)

    def geometry(self, axis: int = 0) -> Geometry:
        return Geometry(self.left_pad + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(F.pad(x, (self.left_pad, 0)), self.weight, self.bias, dilation=self.dilation[0])


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) for (B, C, …) maps."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(2).mean(-1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s.view(s.shape[0], s.shape[1], *([1] * (x.dim() - 2)))


class ChannelLayerNorm1d(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, T) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


NORMS = ("batch", "none")  # the norm choice of the ResNet and DenseNet bodies


def norm_layer(dims: int, channels: int, norm: str = "batch") -> nn.Module:
    """Batch norm over ``channels`` (1D or 2D), or an identity for ``norm="none"``: the module keeps its position,
    so state-dict names keep their indices either way."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm == "none":
        return nn.Identity()
    return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)


def kaiming_init(module: nn.Module) -> None:
    """He init for convolutions, unit/zero for norms (the torchvision recipe)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_input(x: torch.Tensor, dims: int, in_channels: int, model: str) -> None:
    """Raise a clear error when a batch has the wrong rank or channel count."""
    if x.dim() != dims or x.shape[1] != in_channels:
        layout = "(batch, channels, time)" if dims == 3 else "(batch, channels, height, width)"
        raise ValueError(
            f"{model}: expected input {layout} with {in_channels} channels, got shape {tuple(x.shape)}"
        )


def stochastic_depth_rates(total: int, max_rate: float) -> list[float]:
    """Linearly increasing drop-path rates over ``total`` blocks."""
    if total <= 1:
        return [0.0] * total
    return [max_rate * i / (total - 1) for i in range(total)]

