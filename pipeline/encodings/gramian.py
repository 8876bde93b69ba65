"""Gramian angular fields (Wang & Oates 2015): GASF and GADF with piecewise aggregate approximation.

For each window and channel: PAA to ``image_size`` points (non-overlapping
segments with bounds ``linspace(0, T, S + 1)`` cast to int, as pyts does),
min-max scaling of the PAA series to [-1, 1] (a flat series maps to -1, as
scikit-learn's MinMaxScaler does), ``phi = arccos(x)``, then

- GASF[i, j] = cos(phi_i + phi_j) = x_i x_j - sqrt(1 - x_i^2) sqrt(1 - x_j^2)
- GADF[i, j] = sin(phi_i - phi_j) = sqrt(1 - x_i^2) x_j - x_i sqrt(1 - x_j^2)

Each image reads its own window only. Output ``[N, C * len(methods), S, S]``
float32, channel order (channel 0: methods..., channel 1: methods...).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit, prange

METHODS = ("gasf", "gadf")


def segment_bounds(length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of ``size`` non-overlapping PAA segments of a series of ``length`` points."""
    if not 1 <= size <= length:
        raise ValueError(f"PAA: image size {size} must be between 1 and the window length {length}")
    bounds = np.linspace(0, length, size + 1).astype(np.int64)
    return bounds[:-1], bounds[1:]


def paa(x: np.ndarray, size: int) -> np.ndarray:
    """Piecewise aggregate approximation over the last axis: mean of each of ``size`` segments (float64)."""
    x = np.asarray(x, dtype=np.float64)
    length = x.shape[-1]
    if size == length:
        return x
    start, end = segment_bounds(length, size)
    sums = np.add.reduceat(x, start, axis=-1)
    return sums / (end - start)


@njit(cache=True, parallel=True)
def _fields(x: np.ndarray, gasf: bool, gadf: bool, out: np.ndarray) -> None:
    # x: (M, S) scaled to [-1, 1]; out: (M, n_methods, S, S) float32
    m, size = x.shape
    for r in prange(m):
        c = x[r]
        s = np.sqrt(np.clip(1.0 - c * c, 0.0, 1.0))
        for i in range(size):
            ci, si = c[i], s[i]
            k = 0
            if gasf:
                for j in range(size):
                    out[r, 0, i, j] = ci * c[j] - si * s[j]
                k = 1
            if gadf:
                for j in range(size):
                    out[r, k, i, j] = si * c[j] - ci * s[j]


def minmax_unit(x: np.ndarray) -> np.ndarray:
    """Scale each series (last axis) to [-1, 1]; a flat series becomes -1 everywhere."""
    lo = x.min(axis=-1, keepdims=True)
    hi = x.max(axis=-1, keepdims=True)
    span = hi - lo
    span = np.where(span > 0, span, 1.0)
    out = -1.0 + 2.0 * (x - lo) / span
    return np.clip(out, -1.0, 1.0)


def check_windows(windows: np.ndarray, name: str, min_length: int = 1) -> np.ndarray:
    """A finite float array [N, C, T] with T >= min_length, or a clear error naming ``name``."""
    w = np.asarray(windows)
    if w.ndim != 3:
        raise ValueError(f"{name}: windows must be [N, C, T], got shape {w.shape}")
    if w.shape[2] < min_length:
        raise ValueError(f"{name}: windows have {w.shape[2]} bars, need at least {min_length}")
    if w.size and not np.isfinite(w).all():
        bad = np.argwhere(~np.isfinite(w))[0]
        raise ValueError(f"{name}: window {bad[0]} channel {bad[1]} bar {bad[2]} is not finite; "
                         "windows must not span missing bars")
    return w


@dataclasses.dataclass(frozen=True)
class GramianAngularField:
    """GASF and/or GADF of every channel of windows [N, C, T], PAA-reduced to ``image_size`` × ``image_size``."""

    image_size: int = 64
    methods: tuple[str, ...] = METHODS
    input_length: int = 128

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"GramianAngularField: methods {self.methods!r}: use a non-empty subset of {METHODS}")
        segment_bounds(self.input_length, self.image_size)

    dtype = np.float16  # storage dtype; encode returns float32

    def output_shape(self, in_channels: int = 1) -> tuple[int, int, int]:
        return (in_channels * len(self.methods), self.image_size, self.image_size)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        w = check_windows(windows, "GramianAngularField", self.image_size)
        n, c, _ = w.shape
        x = minmax_unit(paa(w, self.image_size)).reshape(n * c, self.image_size)  # in [-1, 1]
        out = np.empty((n * c, len(self.methods), self.image_size, self.image_size), dtype=np.float32)
        if n * c:
            _fields(np.ascontiguousarray(x), "gasf" in self.methods, "gadf" in self.methods, out)
        if self.methods == ("gadf", "gasf"):
            out = out[:, ::-1]
        return np.ascontiguousarray(out).reshape(n, c * len(self.methods), self.image_size, self.image_size)
