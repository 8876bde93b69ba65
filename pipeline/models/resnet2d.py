"""ResNet-18-style 2D CNN for candlestick charts and GASF images; the ``resnet18`` variant is torchvision's
ResNet-18 body exactly (the body is :func:`pipeline.models.resnet1d.resnet_body` in two dimensions).

Trained as ``models/resnet2d_gaf`` (GASF / GADF images), ``models/resnet2d_candlestick`` (20-bar charts) and
``models/resnet2d_candlestick_simclr`` (the same charts, backbone SimCLR-pre-trained per fold on that fold's
training-span charts: :mod:`pipeline.training.pretrain`; its scratch twin is resnet2d_candlestick).
"""

from __future__ import annotations

import dataclasses

from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.heads import MultiTaskHead
from pipeline.models.resnet1d import resnet_body
from pipeline.models.zoo import Architecture, ZooModel, register_architecture

@dataclasses.dataclass(frozen=True)
class ResNet2dConfig:
    in_channels: int = 3
    image_size: tuple[int, int] = (64, 64)
    block: str = "basic"
    layers: tuple[int, ...] = (1, 1, 1, 1)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    stem_channels: int = 16
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool: bool = True
    se: bool = False
    dropout: float = 0.0


def build_resnet2d(cfg: ResNet2dConfig) -> ZooModel:
    body, width = resnet_body(2, cfg.in_channels, cfg.block, cfg.layers, cfg.widths, cfg.stem_channels,
                              cfg.stem_kernel, cfg.stem_stride, cfg.stem_pool, se=cfg.se)
    return ZooModel(cfg, body, MultiTaskHead(width, "avg", cfg.dropout), causal=False, kind="image")


_R18 = dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem_channels=64)
register_architecture(Architecture(
    name="resnet2d", config_class=ResNet2dConfig,
    variants={"default": ResNet2dConfig(),
              "small": ResNet2dConfig(layers=(2, 2, 2, 2), widths=(32, 64, 128, 256), stem_channels=32),
              "resnet18": ResNet2dConfig(**_R18),
              "resnet18-se": ResNet2dConfig(se=True, **_R18)},
    builder=build_resnet2d, causal=False, kind="image", default_input_shape=(3, 64, 64),
    description="ResNet-18-style 2D CNN for candlestick charts and GASF images",
))
register_trainable(TrainableModel("resnet2d_gaf", "resnet2d", encoding="gaf"))
register_trainable(TrainableModel("resnet2d_candlestick", "resnet2d", encoding="candlestick_20"))
register_trainable(TrainableModel("resnet2d_candlestick_simclr", "resnet2d", encoding="candlestick_20",
                                  pretrain="simclr"))
