"""1D DenseNet (Huang et al. 2017) for (batch, channels, time) windows.

Dense blocks of BN-ReLU-Conv layers (optional 1×1 bottleneck of
``bn_size · k`` channels before the k=3 conv), each adding ``growth_rate``
channels to the concatenation; transition layers BN-ReLU-1×1 conv
(compression θ) + average pool k=2; stem conv k=7 s=2 + max-pool.
``memory_efficient=True`` recomputes the concatenation + bottleneck in the
backward pass (gradient checkpointing) instead of storing it.

``downsample=False`` keeps the time resolution (stem stride 1, no max-pool,
transitions without pooling) and the head reads the newest step
(``pooling="last"``): with the ImageNet-style downsampling a short window
shrinks to one or two steps that each summarise the whole window, and the
planted last-bar pattern of tests/training/test_honesty_training.py (32-bar
windows) was scored below the majority class. ``norm="none"`` drops the
batch norms (the pre-activations are plain ReLUs). The CPU-sized ``default``
is one full-resolution, norm-free dense block of 6 layers (measured there:
with batch norm, or with the 1×1 compressing transitions of three blocks, the
pattern was lost or marginal); the published-style sizes (``tiny`` …
``large``) keep the ImageNet recipe with batch norm.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.utils.checkpoint as cp
from torch import nn

from pipeline.models.heads import MultiTaskHead
from pipeline.models.layers import NORMS, Geometry, compose, kaiming_init, norm_layer
from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.zoo import Architecture, ZooModel, register_architecture


@dataclasses.dataclass(frozen=True)
class DenseNet1dConfig:
    in_channels: int = 15
    blocks: tuple[int, ...] = (6,)
    growth_rate: int = 16
    bn_size: int = 4  # bottleneck width = bn_size · growth_rate; 0 = no bottleneck
    compression: float = 0.5
    init_features: int = 0  # 0 = 2 · growth_rate
    kernel_size: int = 3
    dropout: float = 0.0
    memory_efficient: bool = False
    downsample: bool = False  # True: stem stride 2 + max-pool, average pool k=2 in each transition (ImageNet)
    pooling: str = "last"  # head pooling (MultiTaskHead.POOLINGS)
    norm: str = "none"  # "batch" | "none"


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int, kernel_size: int, dropout: float,
                 memory_efficient: bool, norm: str = "batch"):
        super().__init__()
        self.memory_efficient = memory_efficient
        if bn_size > 0:
            mid = bn_size * growth
            self.bottleneck = nn.Sequential(norm_layer(1, cin, norm), nn.ReLU(inplace=True),
                                            nn.Conv1d(cin, mid, 1, bias=False))
        else:
            mid = cin
            self.bottleneck = nn.Identity()
        self.conv = nn.Sequential(norm_layer(1, mid, norm), nn.ReLU(inplace=True),
                                  nn.Conv1d(mid, growth, kernel_size, padding=kernel_size // 2, bias=False))
        self.dropout = nn.Dropout(dropout)

    def geometry(self, axis: int = 0) -> Geometry:
        from pipeline.models.geometry import sequential_geometry

        return sequential_geometry(self.conv, axis)

    def _bottleneck(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.bottleneck(torch.cat(features, 1))

    @torch.jit.unused
    def _checkpointed(self, features: list[torch.Tensor]) -> torch.Tensor:
        return cp.checkpoint(lambda *f: self._bottleneck(list(f)), *features, use_reentrant=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and any(f.requires_grad for f in features):
            mid = self._checkpointed(features)
        else:
            mid = self._bottleneck(features)
        return self.dropout(self.conv(mid))


class DenseBlock(nn.Module):
    def __init__(self, n: int, cin: int, growth: int, **kw):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, **kw) for i in range(n))

    def geometry(self, axis: int = 0) -> Geometry:
        # The last layer sees the outputs of all earlier ones: the longest path runs through every layer.
        return compose(*(layer.geometry(axis) for layer in self.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


def build(cfg: DenseNet1dConfig) -> ZooModel:
    if cfg.norm not in NORMS:
        raise ValueError(f"DenseNet1dConfig.norm must be one of {NORMS}, got {cfg.norm!r}")
    k = cfg.growth_rate
    c = cfg.init_features or 2 * k
    mods: list[nn.Module] = [nn.Conv1d(cfg.in_channels, c, 7, stride=2 if cfg.downsample else 1, padding=3, bias=False),
                             norm_layer(1, c, cfg.norm), nn.ReLU(inplace=True)]
    if cfg.downsample:
        mods.append(nn.MaxPool1d(3, 2, 1))
    kw = dict(bn_size=cfg.bn_size, kernel_size=cfg.kernel_size, dropout=cfg.dropout,
              memory_efficient=cfg.memory_efficient, norm=cfg.norm)
    for i, n in enumerate(cfg.blocks):
        mods.append(DenseBlock(n, c, k, **kw))
        c += n * k
        if i < len(cfg.blocks) - 1:
            out = int(c * cfg.compression)
            mods += [norm_layer(1, c, cfg.norm), nn.ReLU(inplace=True), nn.Conv1d(c, out, 1, bias=False)]
            if cfg.downsample:
                mods.append(nn.AvgPool1d(2, 2))
            c = out
    mods += [norm_layer(1, c, cfg.norm), nn.ReLU(inplace=True)]
    body = nn.Sequential(*mods)
    kaiming_init(body)
    return ZooModel(cfg, body, MultiTaskHead(c, cfg.pooling), causal=False, kind="sequence",
                    min_length=4 * 2 ** (len(cfg.blocks) - 1) if cfg.downsample else 1)


_IMAGENET = dict(downsample=True, pooling="avg_last", norm="batch")  # strided, head on the window average and the newest step
VARIANTS = {
    "default": DenseNet1dConfig(),
    "tiny": DenseNet1dConfig(blocks=(4, 4, 4), growth_rate=16, **_IMAGENET),
    "small": DenseNet1dConfig(blocks=(6, 12, 8), growth_rate=24, **_IMAGENET),
    "medium": DenseNet1dConfig(blocks=(6, 12, 24), growth_rate=32, **_IMAGENET),
    "large": DenseNet1dConfig(blocks=(6, 12, 32, 24), growth_rate=48, **_IMAGENET),
}

ARCHITECTURE = register_architecture(Architecture(
    name="densenet1d", config_class=DenseNet1dConfig, variants=VARIANTS, builder=build,
    causal=False, kind="sequence", default_input_shape=(15, 256),
    description="1D DenseNet: dense blocks, bottlenecks, compressed transitions",
))

register_trainable(TrainableModel("densenet1d", "densenet1d"))  # models/densenet1d: sequence windows of the model inputs
