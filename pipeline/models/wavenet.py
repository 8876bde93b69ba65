"""WaveNet-style dilated causal CNN (van den Oord et al. 2016; Borovykh et al. 2017).

Causal dilated convolutions (left padding only) with dilations 1, 2, …,
2^(L-1), optionally repeated in several stacks; gated activation
tanh(filter) ⊙ sigmoid(gate); residual and skip 1×1 convolutions; summed
skips → ReLU → 1×1 → ReLU form the feature map read by the head at the last
time step. Receptive field: 1 + stacks · (k - 1) · (2^L - 1).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.heads import MultiTaskHead
from pipeline.models.layers import CausalConv1d, Geometry, compose
from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.zoo import Architecture, ZooModel, register_architecture


@dataclasses.dataclass(frozen=True)
class WaveNetConfig:
    in_channels: int = 15
    residual_channels: int = 24
    skip_channels: int = 32
    kernel_size: int = 2
    layers_per_stack: int = 8
    stacks: int = 1
    dropout: float = 0.0

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(self.layers_per_stack)) * self.stacks


class GatedResidualLayer(nn.Module):
    """One WaveNet layer: dilated causal conv → tanh ⊙ sigmoid → residual and skip 1×1."""

    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int,
                 has_residual: bool = True, dropout: float = 0.0):
        super().__init__()
        self.dilated = CausalConv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        # Residual and skip 1×1 convolutions fused into one conv (fewer, larger kernels on CPU);
        # the last layer has no residual output (nothing would read it).
        self.has_residual = has_residual
        self.skip_channels = skip_channels
        self.out = nn.Conv1d(channels, skip_channels + (channels if has_residual else 0), 1)
        self.dropout = nn.Dropout(dropout)

    def geometry(self, axis: int = 0) -> Geometry:
        return Geometry(self.dilated.left_pad + 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filt, gate = self.dilated(x).chunk(2, dim=1)
        z = self.dropout(torch.tanh(filt) * torch.sigmoid(gate))
        y = self.out(z)
        if self.has_residual:
            return x + y[:, self.skip_channels:], y[:, : self.skip_channels]
        return x, y


class WaveNetBody(nn.Module):
    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        self.input = nn.Conv1d(cfg.in_channels, cfg.residual_channels, 1)
        dil = cfg.dilations
        self.layers = nn.ModuleList(
            GatedResidualLayer(cfg.residual_channels, cfg.skip_channels, cfg.kernel_size, d,
                               has_residual=i < len(dil) - 1, dropout=cfg.dropout)
            for i, d in enumerate(dil)
        )
        self.post = nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1)

    def geometry(self, axis: int = 0) -> Geometry:
        # The skip sum adds paths of every depth; the deepest path is the longest.
        return compose(*(layer.geometry(axis) for layer in self.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        skips = None
        for layer in self.layers:
            x, s = layer(x)
            skips = s if skips is None else skips + s
        return F.relu(self.post(F.relu(skips)))


def build(cfg: WaveNetConfig) -> ZooModel:
    body = WaveNetBody(cfg)
    return ZooModel(cfg, body, MultiTaskHead(cfg.skip_channels, pooling="last"), causal=True, kind="sequence")


VARIANTS = {
    # 1 stack of 8 layers, k=2: receptive field 256 (one default window).
    "default": WaveNetConfig(),
    "small": WaveNetConfig(residual_channels=48, skip_channels=96, layers_per_stack=8, stacks=2),
    # Borovykh et al. (2017) conditional WaveNet for financial series: k=2, small width.
    "borovykh": WaveNetConfig(residual_channels=32, skip_channels=32, layers_per_stack=6, stacks=1),
    # Original WaveNet-like stack sizes: 3 stacks × 10 layers, 64 residual / 256 skip channels.
    "wavenet": WaveNetConfig(residual_channels=64, skip_channels=256, layers_per_stack=10, stacks=3),
}

ARCHITECTURE = register_architecture(Architecture(
    name="wavenet", config_class=WaveNetConfig, variants=VARIANTS, builder=build,
    causal=True, kind="sequence", default_input_shape=(15, 256),
    description="gated dilated causal CNN with residual and skip connections",
))

register_trainable(TrainableModel("wavenet", "wavenet"))  # models/wavenet: sequence windows of the model inputs
