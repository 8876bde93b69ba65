"""DeepLOB-style network (Zhang et al. 2019) for order-book heatmaps laid out as time x price levels.

1x2 stride-2 convolutions merge neighbouring levels, (k x 1) convolutions run over time, a final 1 x (levels/4)
convolution collapses the levels, and an inception module over time (1x1 -> 3x1, 1x1 -> 5x1, pool -> 1x1)
feeds the heads. Trained as ``models/orderbook_net`` on the ``orderbook_heatmap`` encoding.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.heads import MultiTaskHead
from pipeline.models.layers import Geometry, kaiming_init, parallel
from pipeline.models.zoo import Architecture, ZooModel, register_architecture

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
        from pipeline.models.geometry import sequential_geometry

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
register_trainable(TrainableModel("orderbook_net", "orderbook_net", encoding="orderbook_heatmap"))
