"""Indicator images (CNN-TA, Sezer and Ozbayoglu 2018): a 15 x 15 matrix per bar.

Rows are technical indicators at several periods, columns the last
``columns`` bars (oldest left, the image's own bar right). Every indicator of
an image is computed from that image's input window only (``input_length``
bars ending at its ts), with the project's indicator kernels
(:mod:`pipeline.features.recursive`, :mod:`pipeline.features.rolling_windows`),
so an image never reads a bar after its ts and does not depend on where the
series starts.

Default rows (``ROWS``): RSI (Wilder) 7 / 14 / 21, Williams %R 7 / 14 / 21,
CMO 7 / 14 / 21, rate of change 7 / 14 / 21 (percent), MACD histogram
(12, 26, 9) in percent of the close, CCI 20 and the distance of the close to
its EMA 20 (percent). The paper laid out 15 indicators x 15 periods on one
day; here the columns are the last 15 bars, so the image shows how the
indicators moved, as the issue asks.

Scaling: the encoder returns raw indicator values unless it is given an
:class:`IndicatorScaling`, which is fitted on the training rows of a fold
only (:func:`fit_indicator_scaling`): per row, the 1st and 99th percentiles
of the training images map to 0 and 1 and values are clipped to [0, 1]
(the paper's min-max scaling, robust to a single outlier).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit, prange

from pipeline.features.recursive import ema, rsi
from pipeline.features.rolling_windows import rolling_max, rolling_min, rolling_sum

PERIODS = (7, 14, 21)
ROWS: tuple[str, ...] = (
    *[f"rsi_{n}" for n in PERIODS],
    *[f"willr_{n}" for n in PERIODS],
    *[f"cmo_{n}" for n in PERIODS],
    *[f"roc_{n}" for n in PERIODS],
    "macd_hist_pct",
    "cci_20",
    "ema_dist_20",
)
# bars before the first column at which every row is defined: the MACD signal is the last to start
# (EMA 26 seeded at bar 25, its EMA 9 at bar 25 + 8)
WARMUP_BARS = 26 + 9 - 2


@njit(cache=True)
def _matrix(o, h, l, c, cols: int, out) -> None:  # noqa: E741 - l is the low
    t_len = c.size
    first = t_len - cols
    row = 0
    for n in (7, 14, 21):
        r = rsi(c, n)
        for j in range(cols):
            out[row, j] = r[first + j]
        row += 1
    for n in (7, 14, 21):
        hh = rolling_max(h, n)
        ll = rolling_min(l, n)
        for j in range(cols):
            t = first + j
            rng = hh[t] - ll[t]
            out[row, j] = -100.0 * (hh[t] - c[t]) / rng if rng > 0 else -50.0
        row += 1
    gain = np.zeros(t_len)
    loss = np.zeros(t_len)
    for t in range(1, t_len):
        d = c[t] - c[t - 1]
        if d > 0:
            gain[t] = d
        else:
            loss[t] = -d
    for n in (7, 14, 21):
        sg = rolling_sum(gain, n)
        sl = rolling_sum(loss, n)
        for j in range(cols):
            t = first + j
            tot = sg[t] + sl[t]
            out[row, j] = 100.0 * (sg[t] - sl[t]) / tot if tot > 0 else 0.0
        row += 1
    for n in (7, 14, 21):
        for j in range(cols):
            t = first + j
            out[row, j] = 100.0 * (c[t] / c[t - n] - 1.0) if t - n >= 0 else np.nan
        row += 1
    e12 = ema(c, 12, 0)
    e26 = ema(c, 26, 0)
    macd = e12 - e26
    signal = ema(macd, 9, 25)
    for j in range(cols):
        t = first + j
        out[row, j] = 100.0 * (macd[t] - signal[t]) / c[t]
    row += 1
    tp = (h + l + c) / 3.0
    for j in range(cols):
        t = first + j
        if t - 19 < 0:
            out[row, j] = np.nan
            continue
        mean = 0.0
        for k in range(t - 19, t + 1):
            mean += tp[k]
        mean /= 20.0
        mad = 0.0
        for k in range(t - 19, t + 1):
            mad += abs(tp[k] - mean)
        mad /= 20.0
        out[row, j] = (tp[t] - mean) / (0.015 * mad) if mad > 0 else 0.0
    row += 1
    e20 = ema(c, 20, 0)
    for j in range(cols):
        t = first + j
        out[row, j] = 100.0 * (c[t] / e20[t] - 1.0)


@njit(cache=True, parallel=True)
def _matrices(w, cols: int, out) -> None:
    for r in prange(w.shape[0]):
        _matrix(w[r, 0].copy(), w[r, 1].copy(), w[r, 2].copy(), w[r, 3].copy(), cols, out[r, 0])


@dataclasses.dataclass(frozen=True)
class IndicatorScaling:
    """Per-row affine map to [0, 1] fitted on training images: (x - low) / (high - low), clipped."""

    low: np.ndarray  # (rows,)
    high: np.ndarray

    def apply(self, images: np.ndarray) -> np.ndarray:
        lo = self.low.reshape(1, 1, -1, 1)
        span = (self.high - self.low).reshape(1, 1, -1, 1)
        return np.clip((np.asarray(images, dtype=np.float32) - lo) / span, 0.0, 1.0).astype(np.float32)

    def as_config(self) -> dict:
        return {"kind": "percentile_minmax", "low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_config(cls, config: dict | None) -> "IndicatorScaling | None":
        """The scaling :meth:`as_config` saved (an artifact's ``row_scaling``); None for none."""
        if not config:
            return None
        if config.get("kind") != "percentile_minmax":
            raise ValueError(f"row_scaling: unknown kind {config.get('kind')!r} (known: percentile_minmax)")
        return cls(np.asarray(config["low"], dtype=np.float32), np.asarray(config["high"], dtype=np.float32))


def fit_indicator_scaling(images: np.ndarray, train_rows: np.ndarray, lower_pct: float = 1.0,
                          upper_pct: float = 99.0) -> IndicatorScaling:
    """Scaling fitted on ``images[train_rows]`` only (raw indicator images [N, 1, rows, cols])."""
    rows = np.asarray(train_rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("fit_indicator_scaling: no training rows")
    x = np.asarray(images[rows], dtype=np.float64)  # (n, 1, R, C)
    per_row = np.moveaxis(x[:, 0], 1, 0).reshape(x.shape[2], -1)  # (R, n * C)
    lo, hi = np.nanpercentile(per_row, [lower_pct, upper_pct], axis=1)
    hi = np.where(hi - lo > 1e-12, hi, lo + 1.0)
    return IndicatorScaling(lo.astype(np.float32), hi.astype(np.float32))


@dataclasses.dataclass(frozen=True)
class IndicatorImage:
    """CNN-TA indicator matrix [N, 1, len(ROWS), columns] of OHLCV windows [N, 5, input_length]."""

    columns: int = 15
    input_length: int = 64
    scaling: IndicatorScaling | None = None

    dtype = np.float16  # storage dtype of raw images; encode returns float32

    def __post_init__(self) -> None:
        if self.input_length < self.columns + WARMUP_BARS:
            raise ValueError(f"IndicatorImage: input_length={self.input_length} bars is too short: "
                             f"{self.columns} columns need {self.columns + WARMUP_BARS} (MACD signal warm-up)")

    @property
    def rows(self) -> tuple[str, ...]:
        return ROWS

    def output_shape(self, in_channels: int = 5) -> tuple[int, int, int]:
        return (1, len(ROWS), self.columns)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 3 or w.shape[1] < 4:
            raise ValueError(f"IndicatorImage: windows must be [N, 5 (o, h, l, c, v), T], got {w.shape}")
        if w.shape[2] < self.input_length:
            raise ValueError(f"IndicatorImage: windows have {w.shape[2]} bars, need {self.input_length}")
        w = np.ascontiguousarray(w[:, :, -self.input_length:])
        if w.size and not np.isfinite(w[:, :4]).all():
            bad = np.argwhere(~np.isfinite(w[:, :4]))[0]
            raise ValueError(f"IndicatorImage: window {bad[0]} channel {bad[1]} bar {bad[2]} is not finite; "
                             "windows must not span missing bars")
        out = np.empty((w.shape[0], *self.output_shape()), dtype=np.float64)
        if w.shape[0]:
            _matrices(w, self.columns, out)
        out = out.astype(np.float32)
        return self.scaling.apply(out) if self.scaling is not None else out
