"""Trailing fixed-length window statistics over contiguous float64 arrays (numba).

Arrays in, arrays out: ``out[t]`` summarises ``x[t-w+1..t]`` and is NaN for the
first ``w - 1`` rows (the caller turns that warm-up prefix into NULL). Inputs
must not hold NaN or nulls; slice leading missing rows off before calling.

Sums and means reproduce polars' ``rolling_sum`` / ``rolling_mean`` bit for
bit (Kahan-compensated running sum, with separate compensation for values
entering and leaving the window), so moving them here changed no value.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """S[t] = x[t-w+1] + ... + x[t], as a Kahan running sum (leaving value removed first)."""
    n = x.size
    out = np.full(n, np.nan)
    total = 0.0
    err_add = 0.0
    err_sub = 0.0
    for t in range(n):
        if t >= w:
            y = (0.0 - x[t - w]) - err_sub
            new = total + y
            err_sub = (new - total) - y
            total = new
        y = x[t] - err_add
        new = total + y
        err_add = (new - total) - y
        total = new
        if t >= w - 1:
            out[t] = total
    return out


@njit(cache=True)
def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """mean[t] = S[t] / w with S the rolling_sum."""
    return rolling_sum(x, w) / w


@njit(cache=True)
def rolling_std(x: np.ndarray, w: int, ddof: int) -> np.ndarray:
    """std[t] = sqrt((sum d^2 - (sum d)^2 / w) / (w - ddof)), d = x - r, over the window.

    The reference r is re-based to x[t] whenever t is a multiple of w (the
    window's sums are then recomputed), so r always lies inside the current
    window: no cancellation against a distant level, drift bounded by w
    updates, and a flat window gives exactly 0. Negative rounding clips to 0.
    """
    n = x.size
    out = np.full(n, np.nan)
    ref = x[0] if n else 0.0
    s1 = 0.0
    s2 = 0.0
    for t in range(n):
        if t >= w and t % w == 0:
            ref = x[t]
            s1 = 0.0
            s2 = 0.0
            for j in range(t - w + 1, t):
                d = x[j] - ref
                s1 += d
                s2 += d * d
        elif t >= w:
            d = x[t - w] - ref
            s1 -= d
            s2 -= d * d
        d = x[t] - ref
        s1 += d
        s2 += d * d
        if t >= w - 1:
            var = (s2 - s1 * s1 / w) / (w - ddof)
            out[t] = np.sqrt(var) if var > 0.0 else 0.0
    return out


@njit(cache=True)
def _rolling_extreme(x: np.ndarray, w: int, sign: float) -> np.ndarray:
    # van Herk / Gil-Werman: running extremes forward and backward within blocks of w rows;
    # a window [t-w+1, t] spans at most two blocks: extreme(backward[t-w+1], forward[t])
    n = x.size
    out = np.full(n, np.nan)
    forward = np.empty(n)
    backward = np.empty(n)
    for t in range(n):
        v = sign * x[t]
        forward[t] = v if t % w == 0 else max(forward[t - 1], v)
    for t in range(n - 1, -1, -1):
        v = sign * x[t]
        backward[t] = v if (t + 1) % w == 0 or t == n - 1 else max(backward[t + 1], v)
    for t in range(w - 1, n):
        out[t] = sign * max(backward[t - w + 1], forward[t])
    return out


@njit(cache=True)
def rolling_max(x: np.ndarray, w: int) -> np.ndarray:
    """max(x[t-w+1..t])."""
    return _rolling_extreme(x, w, 1.0)


@njit(cache=True)
def rolling_min(x: np.ndarray, w: int) -> np.ndarray:
    """min(x[t-w+1..t])."""
    return _rolling_extreme(x, w, -1.0)
