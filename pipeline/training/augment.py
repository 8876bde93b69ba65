"""Training-batch augmentations (never applied to validation or test windows).

All act on a normalised (B, C, W) tensor with a seeded ``torch.Generator``,
vectorised over the batch; one-hot symbol channels (the last ``n_fixed``) are
left untouched.

- ``jitter``: add N(0, 0.03) noise;
- ``scaling``: multiply each (sample, channel) by N(1, 0.1);
- ``time_warp``: resample each window on a smoothly warped time axis (linear
  interpolation; the last step stays the last step, so no future enters);
- ``window_slice``: keep the last 90 % of the window, stretched back to W
  (the window still ends at the same bar).
"""

from __future__ import annotations

import torch

from pipeline.core.choices import AUGMENTATIONS  # one home: the settings check the names too


def parse_augmentations(text: str | tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}: choose from {', '.join(AUGMENTATIONS)}")
    return names


def _resample(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x (B, C, W) sampled at fractional positions (B, W) by linear interpolation."""
    w = x.shape[-1]
    lo = positions.floor().clamp(0, w - 1)
    hi = (lo + 1).clamp(max=w - 1)
    frac = (positions - lo).unsqueeze(1)
    lo_i = lo.long().unsqueeze(1).expand(-1, x.shape[1], -1)
    hi_i = hi.long().unsqueeze(1).expand(-1, x.shape[1], -1)
    return x.gather(2, lo_i) * (1 - frac) + x.gather(2, hi_i) * frac


def augment_batch(x: torch.Tensor, names: tuple[str, ...], generator: torch.Generator, n_fixed: int = 0) -> torch.Tensor:
    if not names:
        return x
    b, c, w = x.shape
    free = c - n_fixed
    y = x[:, :free]
    if "jitter" in names:
        y = y + 0.03 * torch.randn(y.shape, generator=generator)
    if "scaling" in names:
        y = y * (1 + 0.1 * torch.randn((b, free, 1), generator=generator))
    if "time_warp" in names:
        knots = 1 + 0.2 * torch.randn((b, 4), generator=generator)
        speed = torch.nn.functional.interpolate(knots.clamp(0.5, 1.5).unsqueeze(1), size=w, mode="linear",
                                                align_corners=True).squeeze(1)
        cum = speed.cumsum(1)
        pos = (cum - cum[:, :1]) / (cum[:, -1:] - cum[:, :1]) * (w - 1)
        y = _resample(y, pos)
    if "window_slice" in names:
        start = 0.1 * (w - 1)
        pos = torch.linspace(start, w - 1, w).expand(b, w)
        y = _resample(y, pos)
    return torch.cat([y, x[:, free:]], dim=1) if n_fixed else y
