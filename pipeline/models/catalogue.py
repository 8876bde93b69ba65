"""The catalogue of trainable models: what each ``models/<name>`` asset trains, on which input.

A trainable model is a zoo architecture (:mod:`pipeline.models.zoo`) on one input: the sequence windows of
``features.candle_features`` (``encoding=None``) or the images of one encoding
(:mod:`pipeline.encodings.build`), optionally with a pre-trained backbone. One architecture may be trained on
several inputs (``resnet2d`` on GASF images and on candlestick charts), so the catalogue is keyed by the
trained model's name, which is also its asset key (``models/<name>``) and its ``architecture`` in
``models.registry``.

Each architecture file registers its trainable models next to its architecture, so adding one is one new file
plus its name in :data:`pipeline.models.zoo.ARCHITECTURE_MODULES`; training, the assets, the live signals
and the README read this catalogue and nothing else.
"""

from __future__ import annotations

import dataclasses

PRETRAININGS = ("simclr",)


@dataclasses.dataclass(frozen=True)
class TrainableModel:
    name: str  # asset models/<name>, models.registry.architecture
    architecture: str  # the zoo architecture it builds
    encoding: str | None = None  # None: sequence windows of the model inputs; else the image encoding it reads
    pretrain: str | None = None  # "simclr": the backbone pre-trains per fold on that fold's training images

    def __post_init__(self) -> None:
        if self.pretrain is not None and self.pretrain not in PRETRAININGS:
            raise ValueError(f"trainable model {self.name!r}: pretrain={self.pretrain!r}, use one of {PRETRAININGS}")
        if self.pretrain is not None and self.encoding is None:
            raise ValueError(f"trainable model {self.name!r}: pre-training needs an image encoding")

    @property
    def input(self) -> str:
        """``sequence`` or the encoding's name."""
        return self.encoding or "sequence"


_TRAINABLE: dict[str, TrainableModel] = {}


def register_trainable(model: TrainableModel) -> TrainableModel:
    if model.name in _TRAINABLE and _TRAINABLE[model.name] != model:
        raise ValueError(f"trainable model {model.name!r} is registered twice with different inputs")
    _TRAINABLE[model.name] = model
    return model


def _load() -> None:
    from pipeline.models.zoo import load_architectures

    load_architectures()


def trainable_models() -> list[TrainableModel]:
    """Every trainable model, sequence models first, each group in registration order."""
    _load()
    models = list(_TRAINABLE.values())
    return [m for m in models if m.encoding is None] + [m for m in models if m.encoding is not None]


def trainable(name: str) -> TrainableModel:
    _load()
    try:
        return _TRAINABLE[name]
    except KeyError:
        raise KeyError(f"unknown trained model {name!r}: choose one of {', '.join(_TRAINABLE)}") from None


def sequence_model_names() -> tuple[str, ...]:
    return tuple(m.name for m in trainable_models() if m.encoding is None)


def image_model_inputs() -> dict[str, tuple[str, str]]:
    """Image models: name -> (zoo architecture, encoding)."""
    return {m.name: (m.architecture, m.encoding) for m in trainable_models() if m.encoding is not None}


def pretrained_model_names() -> tuple[str, ...]:
    return tuple(m.name for m in trainable_models() if m.pretrain is not None)


def trainable_table() -> str:
    """Markdown table: the asset of each trainable model, its zoo architecture and its input."""
    rows = ["| asset | architecture | input | backbone |", "|---|---|---|---|"]
    for m in trainable_models():
        source = f"encodings/{m.encoding}" if m.encoding else "features/candle_features (windows)"
        rows.append(f"| models/{m.name} | {m.architecture} | {source} | "
                    f"{'SimCLR pre-trained per fold' if m.pretrain == 'simclr' else 'from scratch'} |")
    return "\n".join(rows)
