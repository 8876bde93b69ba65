"""One trained model's recipe: :class:`TrainingConfig`, built from :class:`pipeline.config.Settings`.

The recipe does not re-declare the settings: each of its training fields names the setting it comes from
(:data:`SETTING_OF`), and its type and default are that setting's. What the settings cannot know comes from
the catalogue of trainable models (:mod:`pipeline.models.catalogue`): the zoo architecture, the encoding an
image model reads, and a backbone pre-training.
"""

from __future__ import annotations

import dataclasses

from pipeline.config import Settings
from pipeline.models.catalogue import trainable
from pipeline.training.augment import parse_augmentations
from pipeline.training.losses import LossConfig
from pipeline.training.pretrain import PretrainConfig

# recipe field -> the Settings field it takes its type, default and value from (field order is the recipe's:
# it enters the checkpoint key, so a reorder retrains once)
SETTING_OF: dict[str, str] = {
    "variant": "model_variant", "window": "window", "horizon": "horizon", "n_folds": "n_folds",
    "epochs": "epochs", "batch_size": "batch_size", "learning_rate": "learning_rate",
    "weight_decay": "weight_decay", "patience": "patience", "seed": "training_seed", "pooled": "pooled",
    "train_min_fraction": "train_min_fraction", "embargo": "embargo_bars",
    "validation_fraction": "validation_fraction", "rolling": "rolling_train", "warmup_epochs": "warmup_epochs",
    "grad_clip": "grad_clip", "max_train_windows": "max_train_windows", "class_weighting": "class_weighting",
    "label_smoothing": "label_smoothing", "return_weight": "return_loss_weight",
    "volatility_weight": "volatility_loss_weight", "sharpe_weight": "sharpe_loss_weight",
}
_SETTINGS = {f.name: f for f in dataclasses.fields(Settings)}


class _Recipe:
    """Methods of :class:`TrainingConfig`."""

    @classmethod
    def from_settings(cls, settings, architecture: str, **overrides) -> "TrainingConfig":
        """The recipe of trained model ``architecture`` (a name of the catalogue) under ``settings``."""
        values = {ours: getattr(settings, theirs) for ours, theirs in SETTING_OF.items()}
        values.update(architecture=architecture, augment=parse_augmentations(settings.augment),
                      threads=settings.training_threads)
        try:
            entry = trainable(architecture)
        except KeyError:
            entry = None  # a zoo architecture trained on sequence windows under its own name
        if entry is not None and entry.architecture != architecture:
            values["model"] = entry.architecture
        if entry is not None and entry.encoding is not None:
            values["model"], values["encoding"] = entry.architecture, entry.encoding
        if entry is not None and entry.pretrain is not None:
            values["pretrain"] = PretrainConfig.from_settings(settings)
        values.update(overrides)
        return cls(**values)

    @property
    def zoo_name(self) -> str:
        return self.model or self.architecture

    @property
    def loss(self) -> LossConfig:
        return LossConfig(self.class_weighting, self.label_smoothing, 2.0, self.return_weight,
                          self.volatility_weight, self.sharpe_weight)


def _setting_field(name: str):
    setting = _SETTINGS[SETTING_OF[name]]
    return name, setting.type, dataclasses.field(default=setting.default)


TrainingConfig = dataclasses.make_dataclass(
    "TrainingConfig",
    [("architecture", str),
     *[_setting_field(name) for name in SETTING_OF],
     ("augment", "tuple[str, ...]", dataclasses.field(default=())),  # parsed CONVTRADE_AUGMENT
     ("model", str, dataclasses.field(default="")),  # zoo architecture when it differs from the name (image models)
     ("encoding", str, dataclasses.field(default="")),  # the image encoding an image model trains on ("": windows)
     ("threads", int, dataclasses.field(default=Settings.training_threads)),  # torch threads; 0: default_threads()
     ("pretrain", "PretrainConfig | None", dataclasses.field(default=None))],  # transfer models: the pre-training
    bases=(_Recipe,), frozen=True,
)
TrainingConfig.__module__ = __name__
TrainingConfig.__doc__ = ("One trained model's recipe: ``architecture`` (its catalogue name) and the training settings "
                          "named in SETTING_OF, plus what the catalogue adds. Build it with from_settings.")
