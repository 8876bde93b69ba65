"""CNN-TA (Sezer & Ozbayoglu 2018) for indicator matrices (15 indicators x 15 bars, newest bar in the right column).

Conv 3x3 x32 -> conv 3x3 x64, then ``read="flatten"`` (the paper, variant ``sezer2018``): max-pool 2 ->
dropout 0.25 -> flatten -> FC 128 -> dropout 0.5 -> heads; or ``read="newest"`` (``default``, ``wide``): the
newest column of the conv map (64 channels x 15 indicator rows, each seeing the last 3 bars' values of its own
and its neighbouring indicators) -> FC 128 -> heads, no dropout. The paper's floor max-pool drops the 15th
(newest) column and the flatten buries it among 3,136 inputs; the newest column is where a bar's forecast lives
(e.g. the sign of an RSI's last step is the sign of the last bar's return), and at CI size only the ``newest``
read learns it (tests/training/test_image_honesty.py).

Trained as ``models/cnn_ta`` on the ``indicator_image`` encoding.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pipeline.models.heads import MultiTaskHead
from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.zoo import Architecture, ZooModel, register_architecture

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
register_trainable(TrainableModel("cnn_ta", "cnn_ta", encoding="indicator_image"))
