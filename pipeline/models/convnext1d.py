"""1D ConvNeXt (Liu et al. 2022) for (batch, channels, time) windows.

Patchify stem (conv k=4 s=4 + LayerNorm); stages of blocks depthwise k=7
conv → LayerNorm → 1×1 expand ×4 → GELU → 1×1 contract → layer scale
(init 1e-6) → stochastic depth + residual; separate down-sampling layers
(LayerNorm + conv k=2 s=2) between stages.

``downsample=False`` keeps the time resolution: the stride-2 layers between
stages become LayerNorm + 1×1 conv (the width still grows), and with
``stem_kernel=1`` each bar is its own patch, so the newest step the head
reads (``avg_last``: window average + newest step) comes from the newest
bars. With the patchify stem and stage downsampling a 32-bar window shrank to
one step that summarises the whole window, and the planted last-bar pattern
of tests/training/test_honesty_training.py was missed.

Variants (timm-style records): ``atto`` … ``base`` keep the published
patchify recipe. ``default`` is ours, sized for a 2-core CPU: the isotropic
ConvNeXt of Liu et al. 2022 (one stage, constant width, no downsampling),
at full resolution with one-bar patches: 3 blocks of width 32, depthwise
k=7, receptive field 19 bars, 27.1k parameters, 13.2 MFLOPs per 15×256
window (the former four-stage full-resolution default, dims 32, 32, 64, 64,
was 80.6 MFLOPs; bench/models.py, 2 threads, load ~1: 309 windows/s, now
1,214 best / 1,074 median, one window in 0.80 ms). On the planted pattern
(3 epochs, seeds 0, 1, 2) it beat the majority class on both symbols with
p <= 4e-8 and made money after costs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pipeline.models.heads import MultiTaskHead
from pipeline.models.layers import ChannelLayerNorm1d, DropPath, Geometry, stochastic_depth_rates
from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.zoo import Architecture, ZooModel, register_architecture


@dataclasses.dataclass(frozen=True)
class ConvNeXt1dConfig:
    in_channels: int = 15
    depths: tuple[int, ...] = (3,)
    dims: tuple[int, ...] = (32,)
    kernel_size: int = 7
    stem_kernel: int = 1  # patch size (stem conv k = stride)
    drop_path: float = 0.0
    layer_scale_init: float = 1e-6
    downsample: bool = False  # True: LayerNorm + conv k=2 s=2 between stages (published)
    pooling: str = "avg_last"  # head pooling (MultiTaskHead.POOLINGS)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, drop_path: float, layer_scale_init: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init))) if layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path)

    def geometry(self, axis: int = 0) -> Geometry:
        k = self.dwconv.kernel_size[0]
        return Geometry(k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # (B, T, C)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.transpose(1, 2))


def build(cfg: ConvNeXt1dConfig) -> ZooModel:
    if len(cfg.depths) != len(cfg.dims):
        raise ValueError(f"ConvNeXt1dConfig: depths {cfg.depths} and dims {cfg.dims} must have the same length")
    rates = iter(stochastic_depth_rates(sum(cfg.depths), cfg.drop_path))
    mods: list[nn.Module] = [nn.Conv1d(cfg.in_channels, cfg.dims[0], cfg.stem_kernel, stride=cfg.stem_kernel),
                             ChannelLayerNorm1d(cfg.dims[0], eps=1e-6)]
    for i, (depth, dim) in enumerate(zip(cfg.depths, cfg.dims)):
        if i > 0:
            k = 2 if cfg.downsample else 1
            mods += [ChannelLayerNorm1d(cfg.dims[i - 1], eps=1e-6), nn.Conv1d(cfg.dims[i - 1], dim, k, stride=k)]
        mods += [ConvNeXtBlock(dim, cfg.kernel_size, next(rates), cfg.layer_scale_init) for _ in range(depth)]
    mods.append(ChannelLayerNorm1d(cfg.dims[-1], eps=1e-6))
    body = nn.Sequential(*mods)
    for m in body.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    min_length = cfg.stem_kernel * (2 ** (len(cfg.dims) - 1) if cfg.downsample else 1)
    return ZooModel(cfg, body, MultiTaskHead(cfg.dims[-1], cfg.pooling), causal=False, kind="sequence",
                    min_length=min_length)


# Published recipe: patchify stem k=4 s=4, stride-2 downsampling.
_PATCHIFY = dict(stem_kernel=4, downsample=True)
VARIANTS = {
    "default": ConvNeXt1dConfig(),
    # timm's small widths, scaled for a laptop CPU.
    "atto": ConvNeXt1dConfig(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), **_PATCHIFY),
    "nano": ConvNeXt1dConfig(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), drop_path=0.1, **_PATCHIFY),
    # Published sizes (Liu et al. 2022).
    "tiny": ConvNeXt1dConfig(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), drop_path=0.1, **_PATCHIFY),
    "small": ConvNeXt1dConfig(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), drop_path=0.4, **_PATCHIFY),
    "base": ConvNeXt1dConfig(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), drop_path=0.5, **_PATCHIFY),
}

ARCHITECTURE = register_architecture(Architecture(
    name="convnext1d", config_class=ConvNeXt1dConfig, variants=VARIANTS, builder=build,
    causal=False, kind="sequence", default_input_shape=(15, 256),
    description="1D ConvNeXt: patchify stem, depthwise k=7 blocks, layer scale, stochastic depth",
))

register_trainable(TrainableModel("convnext1d", "convnext1d"))  # models/convnext1d: sequence windows of the model inputs
