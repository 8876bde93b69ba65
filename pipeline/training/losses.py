"""Multi-task training loss over the zoo's heads.

``direction``: cross-entropy with class weights (``balanced``: inverse class
frequency on the fit rows) or focal loss (gamma 2), with label smoothing;
``return``: Huber on the forward return divided by its fit-row std;
``volatility``: Huber on the forward volatility divided by its fit-row mean;
``sharpe`` (option): minus the Sharpe ratio of the position ``p_up - p_down``
times the forward return over the batch (differentiable, as in the DenseNet seed).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from pipeline.models.heads import HeadOutput

from pipeline.core.choices import CLASS_WEIGHTINGS as WEIGHTINGS  # noqa: E402 - one home: the settings check them too


@dataclasses.dataclass(frozen=True)
class LossConfig:
    class_weighting: str = "balanced"
    label_smoothing: float = 0.05
    focal_gamma: float = 2.0
    return_weight: float = 0.5
    volatility_weight: float = 0.25
    sharpe_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.class_weighting not in WEIGHTINGS:
            raise ValueError(f"class_weighting={self.class_weighting!r}: use one of {', '.join(WEIGHTINGS)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing!r}: must be in [0, 1)")


def balanced_class_weights(label_class, n_classes: int = 3) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 (a class absent from the rows gets weight 1)."""
    counts = torch.bincount(torch.as_tensor(label_class, dtype=torch.int64), minlength=n_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), torch.ones_like(counts))
    return (weights / weights.mean()).float()


def sharpe_loss(out: HeadOutput, ret: torch.Tensor) -> torch.Tensor:
    proba = out.direction_logits.softmax(dim=1)
    pnl = (proba[:, 2] - proba[:, 0]) * ret
    return -pnl.mean() / (pnl.std(unbiased=False) + 1e-6)


def multitask_loss(out: HeadOutput, direction: torch.Tensor, ret_scaled: torch.Tensor | None = None,
                   vol_scaled: torch.Tensor | None = None, config: LossConfig = LossConfig(),
                   class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the direction, return, volatility (and optional Sharpe) losses of one batch.

    The one loss of the zoo's heads (training, tests, benchmarks). A target given as None drops its terms
    (``ret_scaled``: the return and Sharpe losses; ``vol_scaled``: the volatility loss), so a direction-only
    batch is ``multitask_loss(out, direction)``.
    """
    logits = out.direction_logits
    if config.class_weighting == "focal":
        logp = F.log_softmax(logits, dim=1)
        n = logits.shape[1]
        target = F.one_hot(direction, n).to(logp.dtype) * (1 - config.label_smoothing) + config.label_smoothing / n
        focal = (1 - logp.exp()).pow(config.focal_gamma)
        ce = -(target * focal * logp).sum(dim=1).mean()
    else:
        weight = class_weights if config.class_weighting == "balanced" else None
        ce = F.cross_entropy(logits, direction, weight=weight, label_smoothing=config.label_smoothing)
    loss = ce
    if config.return_weight and ret_scaled is not None:
        loss = loss + config.return_weight * F.huber_loss(out.expected_return, ret_scaled)
    if config.volatility_weight and vol_scaled is not None:
        loss = loss + config.volatility_weight * F.huber_loss(out.expected_volatility, vol_scaled)
    if config.sharpe_weight and ret_scaled is not None:
        loss = loss + config.sharpe_weight * sharpe_loss(out, ret_scaled)
    return loss
