"""2D CNNs for image encodings of markets (batch, channels, height, width).

- ``cnn_ta``: the CNN-TA network of Sezer & Ozbayoglu (2018) for indicator
  matrices (15 indicators × 15 bars, newest bar in the right column): conv 3×3
  ×32 → conv 3×3 ×64, then ``read="flatten"`` (the paper, variant
  ``sezer2018``): max-pool 2 → dropout 0.25 → flatten → FC 128 → dropout 0.5
  → heads; or ``read="newest"`` (``default``, ``wide``): the newest column of
  the conv map (64 channels × 15 indicator rows, each seeing the last 3 bars'
  values of its own and its neighbouring indicators) → FC 128 → heads, no
  dropout. The paper's floor max-pool drops the 15th (newest) column and the
  flatten buries it among 3,136 inputs; the newest column is where a bar's
  forecast lives (e.g. the sign of an RSI's last step is the sign of the last
  bar's return), and at CI size only the ``newest`` read learns it
  (tests/training/test_image_honesty.py).
- ``resnet2d``: ResNet-18-style network for candlestick charts and GASF
  images; the ``resnet18`` variant is torchvision's ResNet-18 body exactly.
- ``orderbook_net``: DeepLOB-style network (Zhang et al. 2019) for
  order-book heatmaps laid out as time × price levels: 1×2 stride-2
  convolutions merge neighbouring levels, (k×1) convolutions run over time,
  a final 1×(levels/4) convolution collapses the levels, and an inception
  module over time (1×1→3×1, 1×1→5×1, pool→1×1) feeds the heads.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pipeline.models.heads import MultiTaskHead
from pipeline.models.layers import Geometry, kaiming_init, parallel
from pipeline.models.registry import Architecture, ZooModel, register_architecture
from pipeline.models.resnet1d import resnet_body


# --------------------------------------------------------------------------- CNN-TA
CNN_TA_READS = ("flatten", "newest")


@dataclasses.dataclass(frozen=True)
class CNNTAConfig:
    in_channels: int = 1
    image_size: tuple[int, int] = (15, 15)
    conv_channels: tuple[int, int] = (32, 64)
    hidden: int = 128
    read: str = "newest"  # "flatten": the paper's max-pool + flatten; "newest": the newest column of the conv map
    dropout_conv: float = 0.0
    dropout_fc: float = 0.0


class NewestColumn(nn.Module):
    """(B, C, H, W) -> (B, C·H): the right-most (newest bar's) column of a feature map, flattened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., -1].flatten(1)


def build_cnn_ta(cfg: CNNTAConfig) -> ZooModel:
    if cfg.read not in CNN_TA_READS:
        raise ValueError(f"cnn_ta: read must be one of {CNN_TA_READS}, got {cfg.read!r}")
    h, w = cfg.image_size
    c1, c2 = cfg.conv_channels
    if cfg.read == "flatten":
        read = [nn.MaxPool2d(2), nn.Dropout(cfg.dropout_conv), nn.Flatten()]
        features = c2 * (h // 2) * (w // 2)
    else:
        read = [NewestColumn(), nn.Dropout(cfg.dropout_conv)]
        features = c2 * h
    body = nn.Sequential(
        nn.Conv2d(cfg.in_channels, c1, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
        *read, nn.Linear(features, cfg.hidden), nn.ReLU(inplace=True),
        nn.Dropout(cfg.dropout_fc),
    )
    model = ZooModel(cfg, body, MultiTaskHead(cfg.hidden, "none"), causal=False, kind="image")
    model.fixed_image_size = (h, w)
    return model


register_architecture(Architecture(
    name="cnn_ta", config_class=CNNTAConfig,
    variants={"default": CNNTAConfig(),
              "sezer2018": CNNTAConfig(read="flatten", dropout_conv=0.25, dropout_fc=0.5),
              "wide": CNNTAConfig(image_size=(15, 15), conv_channels=(64, 128), hidden=256)},
    builder=build_cnn_ta, causal=False, kind="image", default_input_shape=(1, 15, 15),
    description="CNN-TA for indicator matrices (fixed image size; newest column + FC, or the paper's flatten + FC)",
))


# --------------------------------------------------------------------------- ResNet 2D
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


# --------------------------------------------------------------------------- order-book heatmaps
@dataclasses.dataclass(frozen=True)
class OrderBookNetConfig:
    in_channels: int = 2  # e.g. bid size, ask size
    image_size: tuple[int, int] = (64, 20)  # (time steps, price levels); levels divisible by 4
    channels: int = 16
    time_kernel: int = 3  # DeepLOB uses 4
    inception_channels: int = 16
    negative_slope: float = 0.01


def _conv_block(cin: int, cout: int, kernel, stride=1, slope: float = 0.01) -> list[nn.Module]:
    """Conv + BN + LeakyReLU; stride 1 keeps the size ('same' zero padding, extra row after for even k)."""
    kt, kl = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad: list[nn.Module] = []
    if stride == 1 and (kt > 1 or kl > 1):
        pad = [nn.ZeroPad2d(((kl - 1) // 2, kl // 2, (kt - 1) // 2, kt // 2))]
    return pad + [nn.Conv2d(cin, cout, (kt, kl), stride=stride), nn.BatchNorm2d(cout),
                  nn.LeakyReLU(slope, inplace=True)]


class TimeInception(nn.Module):
    """Inception module over the time axis of a (B, C, T, 1) map."""

    def __init__(self, cin: int, width: int, slope: float):
        super().__init__()
        self.b3 = nn.Sequential(*_conv_block(cin, width, 1, slope=slope), *_conv_block(width, width, (3, 1), slope=slope))
        self.b5 = nn.Sequential(*_conv_block(cin, width, 1, slope=slope), *_conv_block(width, width, (5, 1), slope=slope))
        self.bp = nn.Sequential(nn.MaxPool2d((3, 1), 1, (1, 0)), *_conv_block(cin, width, 1, slope=slope))

    def geometry(self, axis: int = 0) -> Geometry:
        from pipeline.models.inspect import sequential_geometry

        return parallel(*(sequential_geometry(b, axis) for b in (self.b3, self.b5, self.bp)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b5(x), self.bp(x)], 1)


def build_orderbook_net(cfg: OrderBookNetConfig) -> ZooModel:
    t, levels = cfg.image_size
    if levels % 4 != 0 or levels < 4:
        raise ValueError(f"orderbook_net: price levels (image width) must be a multiple of 4, got {levels}")
    c, k, s = cfg.channels, cfg.time_kernel, cfg.negative_slope
    body = nn.Sequential(
        *_conv_block(cfg.in_channels, c, (1, 2), stride=(1, 2), slope=s),
        *_conv_block(c, c, (k, 1), slope=s),
        *_conv_block(c, c, (1, 2), stride=(1, 2), slope=s),
        *_conv_block(c, c, (k, 1), slope=s),
        *_conv_block(c, c, (1, levels // 4), stride=(1, levels // 4), slope=s),
        *_conv_block(c, c, (k, 1), slope=s),
        TimeInception(c, cfg.inception_channels, s),
    )
    kaiming_init(body)
    model = ZooModel(cfg, body, MultiTaskHead(3 * cfg.inception_channels, "avg"), causal=False, kind="image")
    model.fixed_image_size = (None, levels)
    return model


register_architecture(Architecture(
    name="orderbook_net", config_class=OrderBookNetConfig,
    variants={"default": OrderBookNetConfig(),
              # DeepLOB widths: 32 conv channels, 64 per inception branch, 100 steps × 40 inputs.
              "deeplob": OrderBookNetConfig(in_channels=1, image_size=(100, 40), channels=32,
                                            time_kernel=4, inception_channels=64)},
    builder=build_orderbook_net, causal=False, kind="image", default_input_shape=(2, 64, 20),
    description="DeepLOB-style CNN for order-book heatmaps (time × price levels)",
))
