"""Order-book heatmaps: time (T consecutive snapshots) x price bins within +-2% of mid x resting size.

The image ending at snapshot ``e`` reads snapshots ``e - T + 1 .. e`` only.
Prices are placed relative to the mid of snapshot ``e`` (the newest,
``(best bid + best ask) / 2``), so the picture shows where liquidity rested
while the price moved. Bin ``b`` of ``bins`` covers relative prices
``[-r + b * 2r / bins, -r + (b + 1) * 2r / bins)`` with ``r = half_range``
(0.02); levels outside are dropped, missing levels (NaN) ignored. Two
channels: bid size, ask size (base coin) summed per (snapshot, bin), as
``log1p(size)`` by default (``transform="none"`` keeps raw sizes). Output
``[N, 2, T, bins]`` float32, row 0 the oldest snapshot, column 0 the lowest
price.
"""

from __future__ import annotations

import dataclasses

import numpy as np

BOOK_FIELDS = ("bid_px", "bid_sz", "ask_px", "ask_sz")
TRANSFORMS = ("log1p", "none")


def snapshot_windows(book: np.ndarray, ends: np.ndarray, steps: int) -> np.ndarray:
    """Windows [N, 4, steps, L] of a snapshot array ``book`` [S, 4, L] (fields BOOK_FIELDS) ending at ``ends``."""
    book = np.asarray(book, dtype=np.float64)
    if book.ndim != 3 or book.shape[1] != 4:
        raise ValueError(f"snapshot_windows: book must be [snapshots, 4 ({', '.join(BOOK_FIELDS)}), levels], "
                         f"got {book.shape}")
    ends = np.asarray(ends, dtype=np.int64)
    if ends.size and (ends.min() < steps - 1 or ends.max() >= book.shape[0]):
        raise ValueError(f"snapshot_windows: window ends must lie in [{steps - 1}, {book.shape[0] - 1}]")
    view = np.lib.stride_tricks.sliding_window_view(book, steps, axis=0)  # (S - T + 1, 4, L, T)
    return np.ascontiguousarray(view[ends - (steps - 1)].transpose(0, 1, 3, 2))


@dataclasses.dataclass(frozen=True)
class OrderBookHeatmap:
    steps: int = 32
    bins: int = 20
    half_range: float = 0.02
    transform: str = "log1p"

    dtype = np.float16  # storage dtype; encode returns float32

    def __post_init__(self) -> None:
        if self.steps < 1 or self.bins < 1 or not self.half_range > 0:
            raise ValueError(f"OrderBookHeatmap: steps={self.steps}, bins={self.bins}, "
                             f"half_range={self.half_range} must be positive")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"OrderBookHeatmap: transform={self.transform!r}: use one of {TRANSFORMS}")

    @property
    def input_length(self) -> int:
        return self.steps

    def output_shape(self, in_channels: int = 4) -> tuple[int, int, int]:
        return (2, self.steps, self.bins)

    def bin_edges(self) -> np.ndarray:
        """Relative price edges (bins + 1,) of the columns."""
        return np.linspace(-self.half_range, self.half_range, self.bins + 1)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Heatmaps of snapshot windows [N, 4 (bid_px, bid_sz, ask_px, ask_sz), T >= steps, L]."""
        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 4 or w.shape[1] != 4:
            raise ValueError(f"OrderBookHeatmap: windows must be [N, 4 ({', '.join(BOOK_FIELDS)}), T, levels], "
                             f"got {w.shape}")
        if w.shape[2] < self.steps:
            raise ValueError(f"OrderBookHeatmap: windows have {w.shape[2]} snapshots, need {self.steps}")
        w = w[:, :, -self.steps:]
        n, _, t_len, levels = w.shape
        mid = (w[:, 0, -1, 0] + w[:, 2, -1, 0]) / 2.0  # newest snapshot's best bid / ask
        if n and not (np.isfinite(mid).all() and (mid > 0).all()):
            bad = int(np.flatnonzero(~(np.isfinite(mid) & (mid > 0)))[0])
            raise ValueError(f"OrderBookHeatmap: window {bad} has no valid best bid / ask in its newest snapshot")
        out = np.zeros((n, 2, t_len, self.bins), dtype=np.float64)
        base = (np.arange(n)[:, None, None] * t_len + np.arange(t_len)[None, :, None]) * self.bins  # (n, T, 1)
        for ch, (px, sz) in enumerate(((w[:, 0], w[:, 1]), (w[:, 2], w[:, 3]))):
            with np.errstate(invalid="ignore"):
                rel = px / mid[:, None, None] - 1.0
                pos = np.floor((rel + self.half_range) / (2 * self.half_range) * self.bins)
                ok = np.isfinite(pos) & np.isfinite(sz) & (pos >= 0) & (pos < self.bins) & (sz > 0)
            idx = (base + np.where(ok, pos, 0).astype(np.int64))[ok]
            out[:, ch] = np.bincount(idx, weights=sz[ok], minlength=n * t_len * self.bins).reshape(
                n, t_len, self.bins)
        if self.transform == "log1p":
            out = np.log1p(out)
        return out.astype(np.float32)
