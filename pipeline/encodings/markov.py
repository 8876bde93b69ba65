"""Markov transition fields (Wang & Oates 2015), aggregated to a fixed size.

For each window and channel of length T:

1. quantile bins: ``n_bins - 1`` inner edges at the window's own percentiles
   (linear interpolation); edges closer than 1e-8 to the next one are merged
   (as pyts does), a value goes to bin ``searchsorted(edges, x, side="left")``;
2. the Markov matrix W[a, b]: transitions a -> b between consecutive points,
   each row divided by its count (a row with no transition stays 0), so every
   visited row sums to 1;
3. the field M[i, j] = W[q_i, q_j] (T x T), aggregated to S x S by the mean over
   blocks of the PAA segments (:func:`pipeline.encodings.gramian.segment_bounds`):
   the block mean is (H W H^T)[j, k] / (len_j len_k) with H[j, b] the number of
   points of segment j in bin b, so the T x T field is never built.

Output ``[N, C, S, S]`` float32 in [0, 1].
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit

from pipeline.encodings.gramian import check_windows, segment_bounds


@njit(cache=True)
def _bin_series(x: np.ndarray, edges: np.ndarray, out: np.ndarray) -> None:
    # merge near-equal edges (keep edge i when edge i+1 is not within 1e-8; keep the last)
    n_edges = edges.size
    kept = np.empty(n_edges)
    m = 0
    for i in range(n_edges):
        if i == n_edges - 1 or abs(edges[i + 1] - edges[i]) > 1e-8:
            kept[m] = edges[i]
            m += 1
    for t in range(x.size):
        out[t] = np.searchsorted(kept[:m], x[t], side="left")


@njit(cache=True)
def _fields(x: np.ndarray, edges: np.ndarray, n_bins: int, start: np.ndarray, end: np.ndarray,
            out: np.ndarray, matrices: np.ndarray) -> None:
    n_series, length = x.shape
    size = start.size
    q = np.empty(length, dtype=np.int64)
    hist = np.zeros((size, n_bins))
    tmp = np.zeros((size, n_bins))
    for s in range(n_series):
        _bin_series(x[s], edges[s], q)
        w = matrices[s]
        w[:, :] = 0.0
        for t in range(length - 1):
            w[q[t], q[t + 1]] += 1.0
        for a in range(n_bins):
            total = 0.0
            for b in range(n_bins):
                total += w[a, b]
            if total > 0:
                for b in range(n_bins):
                    w[a, b] /= total
        hist[:, :] = 0.0
        for j in range(size):
            for t in range(start[j], end[j]):
                hist[j, q[t]] += 1.0
        # tmp = hist @ w ; out = tmp @ hist.T / (len_j len_k)
        for j in range(size):
            for b in range(n_bins):
                acc = 0.0
                for a in range(n_bins):
                    acc += hist[j, a] * w[a, b]
                tmp[j, b] = acc
        for j in range(size):
            lj = end[j] - start[j]
            for k in range(size):
                acc = 0.0
                for b in range(n_bins):
                    acc += tmp[j, b] * hist[k, b]
                out[s, j, k] = acc / (lj * (end[k] - start[k]))


def quantile_edges(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges of each series (rows of ``x``): its percentiles at 100 k / n_bins, k = 1..n_bins-1."""
    return np.ascontiguousarray(np.percentile(x, np.linspace(0, 100, n_bins + 1)[1:-1], axis=1).T)


@dataclasses.dataclass(frozen=True)
class MarkovTransitionField:
    """MTF of every channel of windows [N, C, T] with ``n_bins`` quantile states, aggregated to S × S."""

    image_size: int = 64
    n_bins: int = 8
    input_length: int = 128

    dtype = np.float16  # storage dtype; encode returns float32

    def __post_init__(self) -> None:
        if self.n_bins < 2:
            raise ValueError(f"MarkovTransitionField: n_bins={self.n_bins}, need at least 2")
        segment_bounds(self.input_length, self.image_size)

    def output_shape(self, in_channels: int = 1) -> tuple[int, int, int]:
        return (in_channels, self.image_size, self.image_size)

    def transition_matrices(self, windows: np.ndarray) -> np.ndarray:
        """The row-normalised Markov matrices [N, C, n_bins, n_bins] (before the field is built)."""
        return self._run(windows, 1)[1]

    def encode(self, windows: np.ndarray) -> np.ndarray:
        return self._run(windows, self.image_size)[0]

    def _run(self, windows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        w = check_windows(windows, "MarkovTransitionField", max(2, self.image_size))
        n, c, length = w.shape
        x = np.ascontiguousarray(w.reshape(n * c, length), dtype=np.float64)
        start, end = segment_bounds(length, size) if size != length else (np.arange(length), np.arange(1, length + 1))
        out = np.empty((n * c, size, size), dtype=np.float64)
        mats = np.empty((n * c, self.n_bins, self.n_bins), dtype=np.float64)
        if n * c:
            _fields(x, quantile_edges(x, self.n_bins), self.n_bins, start.astype(np.int64), end.astype(np.int64),
                    out, mats)
        return (out.reshape(n, c, size, size).astype(np.float32),
                mats.reshape(n, c, self.n_bins, self.n_bins))
