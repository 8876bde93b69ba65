"""Multi-scale inception CNN (InceptionTime, Ismail Fawaz et al. 2020).

Each module: 1×1 bottleneck, then parallel convolutions with kernels 3, 7,
15, 31 (InceptionTime: 9, 19, 39) and a max-pool k=3 → 1×1 branch,
concatenated, BN, ReLU. Modules are stacked; every ``residual_every``
modules a shortcut (1×1 conv + BN) is added, as in InceptionTime.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.heads import MultiTaskHead
from pipeline.models.layers import Geometry, compose, kaiming_init, parallel
from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.zoo import Architecture, ZooModel, register_architecture


@dataclasses.dataclass(frozen=True)
class InceptionConfig:
    in_channels: int = 15
    filters: int = 8  # channels per branch
    bottleneck: int = 16
    kernels: tuple[int, ...] = (3, 7, 15, 31)
    depth: int = 3
    residual_every: int = 3  # 0 = no shortcuts


class InceptionModule(nn.Module):
    def __init__(self, cin: int, filters: int, bottleneck: int, kernels: tuple[int, ...]):
        super().__init__()
        self.bottleneck = nn.Conv1d(cin, bottleneck, 1, bias=False) if cin > 1 and bottleneck > 0 else nn.Identity()
        width = bottleneck if cin > 1 and bottleneck > 0 else cin
        for k in kernels:
            if k % 2 == 0:
                raise ValueError(f"InceptionConfig.kernels must be odd for 'same' padding, got {k}")
        self.convs = nn.ModuleList(nn.Conv1d(width, filters, k, padding=k // 2, bias=False) for k in kernels)
        self.pool = nn.MaxPool1d(3, 1, 1)
        self.pool_conv = nn.Conv1d(cin, filters, 1, bias=False)
        self.bn = nn.BatchNorm1d(filters * (len(kernels) + 1))

    @property
    def out_channels(self) -> int:
        return self.bn.num_features

    def geometry(self, axis: int = 0) -> Geometry:
        from pipeline.models.geometry import module_geometry

        return parallel(*(module_geometry(c, axis) for c in self.convs), module_geometry(self.pool, axis))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bottleneck(x)
        branches = [conv(z) for conv in self.convs]
        branches.append(self.pool_conv(self.pool(x)))
        return F.relu(self.bn(torch.cat(branches, 1)))


class InceptionResidualBlock(nn.Module):
    """A run of inception modules with an optional 1×1 + BN shortcut around it."""

    def __init__(self, modules: list[InceptionModule], cin: int, residual: bool):
        super().__init__()
        self.modules_ = nn.Sequential(*modules)
        cout = modules[-1].out_channels
        self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout)) if residual else None

    def geometry(self, axis: int = 0) -> Geometry:
        main = compose(*(m.geometry(axis) for m in self.modules_))
        return parallel(main, Geometry(1, 1)) if self.shortcut is not None else main

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.modules_(x)
        if self.shortcut is not None:
            y = F.relu(y + self.shortcut(x))
        return y


def build(cfg: InceptionConfig) -> ZooModel:
    group = cfg.residual_every if cfg.residual_every > 0 else cfg.depth
    blocks, cin, i = [], cfg.in_channels, 0
    while i < cfg.depth:
        n = min(group, cfg.depth - i)
        mods, c = [], cin
        for _ in range(n):
            mods.append(InceptionModule(c, cfg.filters, cfg.bottleneck, cfg.kernels))
            c = mods[-1].out_channels
        blocks.append(InceptionResidualBlock(mods, cin, residual=cfg.residual_every > 0))
        cin, i = c, i + n
    body = nn.Sequential(*blocks)
    kaiming_init(body)
    return ZooModel(cfg, body, MultiTaskHead(cin, "avg_last"), causal=False, kind="sequence")


VARIANTS = {
    "default": InceptionConfig(),
    "small": InceptionConfig(filters=16, bottleneck=16, depth=6),
    # InceptionTime (Ismail Fawaz et al. 2020): 32 filters, bottleneck 32, kernels 10/20/40 (odd here), depth 6.
    "inceptiontime": InceptionConfig(filters=32, bottleneck=32, kernels=(9, 19, 39), depth=6),
}

ARCHITECTURE = register_architecture(Architecture(
    name="inception", config_class=InceptionConfig, variants=VARIANTS, builder=build,
    causal=False, kind="sequence", default_input_shape=(15, 256),
    description="InceptionTime-style multi-scale CNN with residual shortcuts",
))

register_trainable(TrainableModel("inception", "inception"))  # models/inception: sequence windows of the model inputs
