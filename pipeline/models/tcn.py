"""Temporal convolutional network (Bai, Kolter & Koltun 2018).

Residual blocks of two causal dilated convolutions (dilation 2^i in block i)
with weight norm or batch norm, ReLU and dropout, and a 1×1 down-sampling
convolution on the residual path when the width changes. Receptive field:
1 + 2 · (k - 1) · (2^levels - 1).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.heads import MultiTaskHead
from pipeline.models.layers import CausalConv1d, Geometry, WeightNormCausalConv1d, compose, parallel
from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.zoo import Architecture, ZooModel, register_architecture

NORMS = ("weight", "batch", "none")


@dataclasses.dataclass(frozen=True)
class TCNConfig:
    in_channels: int = 15
    channels: tuple[int, ...] = (32, 32, 32, 32, 32, 32)
    kernel_size: int = 3
    dropout: float = 0.0  # CPU dropout (bernoulli masks) costs about half the training step here
    norm: str = "weight"  # "weight" | "batch" | "none"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"TCNConfig.norm must be one of {NORMS}, got {self.norm!r}")

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(len(self.channels)))


def _causal_conv(cin: int, cout: int, k: int, d: int, norm: str) -> nn.Sequential:
    if norm == "weight":
        return nn.Sequential(WeightNormCausalConv1d(cin, cout, k, d))
    if norm == "batch":
        return nn.Sequential(CausalConv1d(cin, cout, k, d, bias=False), nn.BatchNorm1d(cout))
    return nn.Sequential(CausalConv1d(cin, cout, k, d))


class TemporalBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int, dropout: float, norm: str):
        super().__init__()
        self.conv1 = _causal_conv(cin, cout, kernel_size, dilation, norm)
        self.conv2 = _causal_conv(cout, cout, kernel_size, dilation, norm)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None

    def geometry(self, axis: int = 0) -> Geometry:
        from pipeline.models.geometry import module_geometry

        main = compose(module_geometry(self.conv1, axis), module_geometry(self.conv2, axis))
        return parallel(main, Geometry(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop1(F.relu(self.conv1(x)))
        out = self.drop2(F.relu(self.conv2(out)))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)


def build(cfg: TCNConfig) -> ZooModel:
    blocks, cin = [], cfg.in_channels
    for cout, d in zip(cfg.channels, cfg.dilations):
        blocks.append(TemporalBlock(cin, cout, cfg.kernel_size, d, cfg.dropout, cfg.norm))
        cin = cout
    return ZooModel(cfg, nn.Sequential(*blocks), MultiTaskHead(cin, pooling="last"), causal=True, kind="sequence")


VARIANTS = {
    # 6 levels × 32 channels, k=3: receptive field 253.
    "default": TCNConfig(),
    "batchnorm": TCNConfig(norm="batch"),
    "small": TCNConfig(channels=(64,) * 7, kernel_size=3, dropout=0.1),
    # Bai et al. (2018) sequential-MNIST setting: 8 levels × 25 hidden units, k=7.
    "bai2018": TCNConfig(channels=(25,) * 8, kernel_size=7, dropout=0.05),
    # Wider and shallower: 4 levels × 150 channels, k=5.
    "wide": TCNConfig(channels=(150,) * 4, kernel_size=5, dropout=0.25),
}

ARCHITECTURE = register_architecture(Architecture(
    name="tcn", config_class=TCNConfig, variants=VARIANTS, builder=build,
    causal=True, kind="sequence", default_input_shape=(15, 256),
    description="residual blocks of causal dilated convolutions",
))

register_trainable(TrainableModel("tcn", "tcn"))  # models/tcn: sequence windows of the model inputs
