"""The trained network as it predicts: raw inputs in, class probabilities and heads in real units out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from pipeline.training.datasets import WindowStore


class InferenceModel(torch.nn.Module):
    """Raw (unnormalised) windows in; logits, expected return, volatility and confidence out (real units)."""

    def __init__(self, model: torch.nn.Module, center: np.ndarray, scale: np.ndarray, ret_scale: float,
                 vol_scale: float, spatial_dims: int = 1):
        super().__init__()
        self.model = model
        shape = (1, -1) + (1,) * spatial_dims  # per channel over (time) or (height, width)
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32).view(*shape))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).view(*shape))
        self.register_buffer("target_scale", torch.tensor([ret_scale, vol_scale], dtype=torch.float32))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: a gathered window batch has the time axis strided by the channel count, and
        # the convolutions run up to ~1.5x slower on that layout (bench/training.py)
        return ((x - self.center) / self.scale).contiguous()

    def forward(self, x: torch.Tensor):
        out = self.model(self.normalise(x))
        return (out.direction_logits, out.expected_return * self.target_scale[0],
                out.expected_volatility * self.target_scale[1], out.confidence)



@torch.no_grad()
def predict(module: InferenceModel, store: WindowStore, samples: np.ndarray, batch_size: int = 1024):
    """(proba (n, 3), expected return, volatility, confidence) for the given samples, in eval mode."""
    module.eval()
    outs = [[], [], [], []]
    for i in range(0, samples.shape[0], batch_size):
        x = torch.from_numpy(store.gather(store.sample_rows[samples[i:i + batch_size]]))
        logits, ret, vol, conf = module(x)
        for acc, v in zip(outs, (logits.softmax(1), ret, vol, conf)):
            acc.append(v.numpy().astype(np.float64))
    if not samples.shape[0]:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(o) for o in outs)
