"""Candlestick charts as in Jiang, Kelly and Xiu (2023), "(Re-)Imag(in)ing Price Trends".

Black background (0), white drawing (255), one uint8 channel, rasterised by a
numba kernel (no plotting library). For a chart of ``bars`` bars, ``height``
pixels high (5 / 20 / 60 bars: 32 / 64 / 96 px) and ``3 * bars`` wide:

- bar ``i`` owns columns ``3i`` (open tick), ``3i + 1`` (high-low bar, moving
  average, volume bar) and ``3i + 2`` (close tick);
- the volume area is the bottom ``height // 5`` rows, then one blank row, and the
  price area is the ``price_h = height - height // 5 - 1`` rows above it;
- a price ``p`` is drawn at ``y = floor((p - lo) / (hi - lo) * (price_h - 1) + 0.5)``
  pixels above the bottom of the price area (row ``price_h - 1 - y``), with
  ``lo`` / ``hi`` the lowest low / highest high of the drawn bars and of their
  moving average; a flat window (``hi == lo``) draws every price on row
  ``price_h - 1 - (price_h - 1) // 2``;
- the moving average of the close over ``ma_window`` bars (``bars`` by default,
  as in the paper) is a point on column ``3i + 1`` of each bar, joined to the
  next bar's point by a line: column ``x`` of the segment lights every row
  between the rounded line heights at ``x - 1`` and ``x``;
- volume bar height ``floor(v / v_max * (height // 5) + 0.5)`` rows from the bottom.

A bar whose OHLC is not finite (a missing bar) is left blank, and the average
is not drawn where its ``ma_window`` closes are not all finite. Input windows
are ``[N, 5, T]`` (open, high, low, close, volume) with ``T = input_length =
bars + ma_window - 1``: the extra leading bars feed the first averages only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit, prange

HEIGHTS = {5: 32, 20: 64, 60: 96}
OHLCV = ("open", "high", "low", "close", "volume")


@njit(cache=True)
def _y(p: float, lo: float, span: float, price_h: int) -> int:
    if span <= 0.0:
        return (price_h - 1) // 2
    y = int(np.floor((p - lo) / span * (price_h - 1) + 0.5))
    return min(max(y, 0), price_h - 1)


@njit(cache=True, parallel=True)
def _draw(w: np.ndarray, bars: int, ma_window: int, height: int, volume: bool, out: np.ndarray) -> None:
    n = w.shape[0]
    t_len = w.shape[2]
    first = t_len - bars
    vol_h = height // 5 if volume else 0
    price_h = height - vol_h - (1 if volume else 0)
    for r in prange(n):
        img = out[r, 0]
        img[:, :] = 0
        ma = np.full(bars, np.nan)
        for i in range(bars):
            t = first + i
            if t - ma_window + 1 < 0:
                continue
            acc = 0.0
            ok = True
            for k in range(t - ma_window + 1, t + 1):
                c = w[r, 3, k]
                if not np.isfinite(c):
                    ok = False
                    break
                acc += c
            if ok:
                ma[i] = acc / ma_window
        lo = np.inf
        hi = -np.inf
        vmax = 0.0
        for i in range(bars):
            t = first + i
            o, h, l, c = w[r, 0, t], w[r, 1, t], w[r, 2, t], w[r, 3, t]
            if np.isfinite(o) and np.isfinite(h) and np.isfinite(l) and np.isfinite(c):
                lo = min(lo, l)
                hi = max(hi, h)
                v = w[r, 4, t]
                if np.isfinite(v) and v > vmax:
                    vmax = v
            if np.isfinite(ma[i]):
                lo = min(lo, ma[i])
                hi = max(hi, ma[i])
        if not np.isfinite(lo):
            continue  # nothing to draw
        span = hi - lo
        for i in range(bars):
            t = first + i
            o, h, l, c = w[r, 0, t], w[r, 1, t], w[r, 2, t], w[r, 3, t]
            if not (np.isfinite(o) and np.isfinite(h) and np.isfinite(l) and np.isfinite(c)):
                continue
            top = price_h - 1 - _y(h, lo, span, price_h)
            bottom = price_h - 1 - _y(l, lo, span, price_h)
            for row in range(top, bottom + 1):
                img[row, 3 * i + 1] = 255
            img[price_h - 1 - _y(o, lo, span, price_h), 3 * i] = 255
            img[price_h - 1 - _y(c, lo, span, price_h), 3 * i + 2] = 255
            if volume and vmax > 0.0:
                v = w[r, 4, t]
                if np.isfinite(v) and v > 0.0:
                    vh = int(np.floor(v / vmax * vol_h + 0.5))
                    for row in range(height - vh, height):
                        img[row, 3 * i + 1] = 255
        # moving average: points on the middle columns, joined segment by segment
        for i in range(bars):
            if not np.isfinite(ma[i]):
                continue
            x0 = 3 * i + 1
            y0 = (ma[i] - lo) / span * (price_h - 1) if span > 0.0 else float((price_h - 1) // 2)
            img[price_h - 1 - _y(ma[i], lo, span, price_h), x0] = 255
            if i + 1 < bars and np.isfinite(ma[i + 1]):
                y1 = (ma[i + 1] - lo) / span * (price_h - 1) if span > 0.0 else y0
                prev = int(np.floor(y0 + 0.5))
                for step in range(1, 4):
                    cur = int(np.floor(y0 + (y1 - y0) * step / 3.0 + 0.5))
                    a, b = min(prev, cur), max(prev, cur)
                    for y in range(a, b + 1):
                        img[price_h - 1 - min(max(y, 0), price_h - 1), x0 + step] = 255
                    prev = cur


@dataclasses.dataclass(frozen=True)
class CandlestickChart:
    """Jiang-Kelly-Xiu OHLC chart of the last ``bars`` bars: uint8 [N, 1, height, 3 * bars]."""

    bars: int = 20
    height: int | None = None  # None: 32 / 64 / 96 for 5 / 20 / 60 bars
    ma_window: int | None = None  # None: ``bars``
    volume: bool = True

    dtype = np.uint8

    def __post_init__(self) -> None:
        if self.bars < 1:
            raise ValueError(f"CandlestickChart: bars={self.bars}, need at least 1")
        if self.height is None and self.bars not in HEIGHTS:
            raise ValueError(f"CandlestickChart: no default height for {self.bars} bars; give height "
                             f"(the paper's: {HEIGHTS})")
        if self.image_height < (7 if self.volume else 2):
            raise ValueError(f"CandlestickChart: height {self.image_height} px is too small")
        if self.moving_average_window < 1:
            raise ValueError(f"CandlestickChart: ma_window={self.ma_window}, need at least 1")

    @property
    def image_height(self) -> int:
        return self.height if self.height is not None else HEIGHTS[self.bars]

    @property
    def moving_average_window(self) -> int:
        return self.ma_window if self.ma_window is not None else self.bars

    @property
    def input_length(self) -> int:
        return self.bars + self.moving_average_window - 1

    @property
    def volume_rows(self) -> int:
        return self.image_height // 5 if self.volume else 0

    @property
    def price_rows(self) -> int:
        return self.image_height - self.volume_rows - (1 if self.volume else 0)

    def output_shape(self, in_channels: int = 5) -> tuple[int, int, int]:
        return (1, self.image_height, 3 * self.bars)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Charts of OHLCV windows [N, 5, T] (T >= input_length; the last input_length bars are read)."""
        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 3 or w.shape[1] != 5:
            raise ValueError(f"CandlestickChart: windows must be [N, 5 (o, h, l, c, v), T], got {w.shape}")
        if w.shape[2] < self.bars:
            raise ValueError(f"CandlestickChart: windows have {w.shape[2]} bars, the chart draws {self.bars}")
        w = np.ascontiguousarray(w[:, :, -self.input_length:])
        out = np.empty((w.shape[0], *self.output_shape()), dtype=np.uint8)
        if w.shape[0]:
            _draw(w, self.bars, self.moving_average_window, self.image_height, self.volume, out)
        return out
