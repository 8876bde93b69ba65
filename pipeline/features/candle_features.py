"""Every indicator of ``features.candle_features``, computed exactly (numba kernels over numpy arrays).

One series is one (symbol, interval), in ts order. Every computation is causal:
rolling windows end at the row, exponential recursions run forward, coarser
bars are read as of each row (backward). So a feature at ``ts`` depends only
on candles with open time <= ``ts`` (and funding / open interest / order-book
data known by then).

Recursive indicators are exact, not approximations. They follow TA-Lib's
definitions, seeds included (kernels in pipeline.features.recursive, window
statistics in pipeline.features.rolling_windows):

* EMA(n): alpha = 2/(n+1), seeded with the simple mean of the first n values.
* Wilder smoothing (RSI, ATR): alpha = 1/n, seeded with the mean of the first
  n values (gains/losses or true ranges, which start at the second bar).
* ADX(14): +DM/-DM/TR smoothed as Wilder running sums seeded with the sum of
  the first n-1 values (TA-Lib), DX averaged over n bars, then Wilder-smoothed.
* MACD(12, 26, 9) = EMA12 - EMA26, both seeded from the start of the series;
  signal = EMA9 of MACD seeded with the mean of its first 9 values. This
  deliberately differs from TA-Lib's MACD, which seeds the fast EMA later so
  both EMAs start on the same bar; the difference decays as (11/13)^k and is
  below 1e-12 after ~170 bars.

A recursion is a function of the whole history, so an incremental run cannot
recompute "the last n bars" and stay exact. We recompute each series from its
first candle (well under a second for a year of 1m bars) and write only the
requested days (features_for_window; see the dbt model's docstring).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from pipeline.config import Settings
from pipeline.core.choices import GAP_POLICIES
from pipeline.core.columns import HTF_FEATURES
from pipeline.features.recursive import atr, directional_index, ema, ema_family, obv, rsi, true_range
from pipeline.features.rolling_windows import rolling_max, rolling_mean, rolling_min, rolling_std, rolling_sum
from pipeline.core.timegrid import bars_per_year, interval_ms

KEYS = ("symbol", "interval", "ts")
# The staging columns compute_candle_features uses (others are dropped from its output anyway).
CANDLE_INPUT_COLUMNS = (*KEYS, "open", "high", "low", "close", "volume", "turnover", "is_after_gap")

# Base rows are flagged as warm-up until the longest base window (EMA 200) is
# seeded and both coarser timeframes have 21 closed bars.
WARMUP_BARS = 200
HTF_WARMUP_BARS = 21

# A funding rate older than one 8h funding period is stale (a settlement is missing): NULL.
FUNDING_MAX_AGE = dt.timedelta(hours=8) - dt.timedelta(microseconds=1)

# Coarser timeframes joined onto each base interval (Bybit interval codes).
COARSER_INTERVALS: dict[str, tuple[str, str]] = {
    "1": ("15", "60"),
    "3": ("15", "60"),
    "5": ("60", "240"),
    "15": ("60", "240"),
    "30": ("240", "D"),
    "60": ("240", "D"),
    "120": ("720", "D"),
    "240": ("D", "W"),
    "360": ("D", "W"),
    "720": ("D", "W"),
}
# Coarse bars open at multiples of their length since the epoch; weeks on Mondays (the epoch was a Thursday).
_WEEK_OFFSET_US = 4 * 86_400 * 1_000_000


# ---------------------------------------------------------------- columns
def _valid_mask(nulls: int | np.ndarray, height: int) -> np.ndarray:
    if isinstance(nulls, np.ndarray):
        return nulls
    mask = np.ones(height, dtype=bool)
    mask[: max(0, min(nulls, height))] = False
    return mask


class _Columns:
    """Output columns of one series: float64 / int8 arrays with the rows that are NULL.

    ``nulls`` is the length of the NULL warm-up prefix (an int) or a boolean
    validity mask. Built into polars through Arrow buffers (no copy of the
    values, one small validity bitmap per column). The columns of consecutive
    segments are joined with :meth:`concat` (each segment's prefix becomes
    part of one validity mask).
    """

    def __init__(self, height: int) -> None:
        self.height = height
        self.columns: dict[str, tuple[np.ndarray, int | np.ndarray]] = {}

    def add(self, name: str, values: np.ndarray, nulls: int | np.ndarray = 0) -> None:
        self.columns[name] = (values, nulls)

    @classmethod
    def concat(cls, parts: list["_Columns"]) -> "_Columns":
        if len(parts) == 1:
            return parts[0]
        out = cls(sum(p.height for p in parts))
        for name in parts[0].columns:
            out.add(
                name,
                np.concatenate([p.columns[name][0] for p in parts]),
                np.concatenate([_valid_mask(p.columns[name][1], p.height) for p in parts]),
            )
        return out

    @staticmethod
    def _arrow(values: np.ndarray, nulls: int | np.ndarray, n: int) -> pa.Array:
        if isinstance(nulls, np.ndarray):
            bitmap = None if nulls.all() else pa.py_buffer(np.packbits(nulls, bitorder="little"))
        elif nulls <= 0:
            bitmap = None
        elif nulls >= n:
            bitmap = pa.py_buffer(np.zeros((n + 7) // 8, dtype=np.uint8))
        else:
            bits = np.full((n + 7) // 8, 0xFF, dtype=np.uint8)
            bits[: nulls // 8] = 0
            if nulls % 8:
                bits[nulls // 8] = (0xFF << (nulls % 8)) & 0xFF
            bitmap = pa.py_buffer(bits)
        values = np.ascontiguousarray(values)
        kind = pa.int8() if values.dtype == np.int8 else pa.float64()
        return pa.Array.from_buffers(kind, n, [bitmap, pa.py_buffer(values)])

    def frame(self) -> pl.DataFrame:
        n = self.height
        return pl.from_arrow(pa.table({name: self._arrow(v, nulls, n) for name, (v, nulls) in self.columns.items()}))


# Division by a constant is written as a product with its reciprocal: polars evaluates `x / 3.0` so, and the
# values stay bit-identical to the polars expressions these arrays replaced.


@njit(cache=True)
def _ratio_kernel(num: np.ndarray, den: np.ndarray, when_zero: np.ndarray, den_nulls: int) -> np.ndarray:
    out = np.empty(num.size)
    for i in range(num.size):
        out[i] = num[i] / den[i] if i >= den_nulls and den[i] != 0 else when_zero[i if when_zero.size > 1 else 0]
    return out


def _ratio(num: np.ndarray, den: np.ndarray, when_zero: float | np.ndarray, den_nulls: int = 0) -> np.ndarray:
    """num / den, with a stated value where den == 0 (and on its first ``den_nulls`` rows, which the caller NULLs)."""
    return _ratio_kernel(num, den, np.atleast_1d(np.asarray(when_zero, dtype=np.float64)), den_nulls)


@njit(cache=True)
def _asof_rows(available_from: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """For each ts (sorted), the last index i with available_from[i] <= ts, or -1 (a backward as-of match)."""
    out = np.empty(ts.size, dtype=np.int64)
    i = -1
    for t in range(ts.size):
        while i + 1 < available_from.size and available_from[i + 1] <= ts[t]:
            i += 1
        out[t] = i
    return out


# ---------------------------------------------------------------- gaps
def segment_starts(ts_us: np.ndarray, step_us: int) -> np.ndarray:
    """Row indices where a segment of the candle grid starts: row 0 and every row after a missing step."""
    if ts_us.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(([0], np.flatnonzero(np.diff(ts_us) != step_us) + 1))


def fill_gaps(series: pl.DataFrame, step_us: int, max_fill_bars: int) -> pl.DataFrame:
    """One sorted series with every gap of at most ``max_fill_bars`` missing bars filled, plus ``is_filled``.

    A filled bar is flat at the previous close (open = high = low = close),
    volume 0, turnover NULL (freqtrade's ``ohlcv_fill_up_missing_data``).
    Longer gaps (and steps off the grid) stay gaps: the segment policy applies there.
    """
    n = series.height
    ts_us = series["ts"].to_physical().to_numpy()
    fill = np.zeros(n, dtype=np.int64)  # bars to insert after row i
    if n > 1 and max_fill_bars > 0:
        step = np.diff(ts_us)
        missing = step // step_us - 1
        fill[:-1] = np.where((step % step_us == 0) & (missing >= 1) & (missing <= max_fill_bars), missing, 0)
    if not fill.any():
        return series.with_columns(is_filled=pl.lit(False))
    reps = fill + 1
    src = np.repeat(np.arange(n), reps)
    k = np.arange(src.size) - np.repeat(np.cumsum(reps) - reps, reps)  # 0: the real row, 1..: its fills
    filled = pl.Series("is_filled", k > 0)
    out = series[pl.Series(src)].with_columns(filled, _k=pl.Series(k))
    is_filled = pl.col("is_filled")
    return out.with_columns(
        pl.col("ts") + pl.duration(microseconds=pl.col("_k") * step_us),
        *[pl.when(is_filled).then(pl.col("close")).otherwise(pl.col(name)).alias(name) for name in ("open", "high", "low")],
        pl.when(is_filled).then(0.0).otherwise(pl.col("volume")).alias("volume"),
        pl.when(is_filled).then(None).otherwise(pl.col("turnover")).alias("turnover"),
        pl.when(is_filled).then(False).otherwise(pl.col("is_after_gap")).alias("is_after_gap"),
    ).drop("_k")


# ---------------------------------------------------------------- one series
EMA_SPANS = (9, 12, 20, 21, 26, 50, 200)
OUTPUT_FIRST = ["symbol", "interval", "ts", "bar_index", "is_warmup", "is_after_gap", "is_filled"]
# per coarser level, in the table's column order
HTF_COLUMNS = [
    f"htf{level}_{name}" for level in (1, 2) for name in ("log_ret", "rsi_14", "realized_vol_20", "interval", "ema_dist_21")
]


@njit(cache=True)
def log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ln(a / b) elementwise (libm log, as polars' ``log``; numpy's SIMD log can differ in the last bit)."""
    out = np.empty(a.size)
    for i in range(a.size):
        out[i] = math.log(a[i] / b[i])
    return out


def series_features(series: pl.DataFrame, interval: str) -> pl.DataFrame:
    """All features of one (symbol, interval) series sorted by ts, without the market-structure columns.

    The series is cut at every missing step of the candle grid; each segment
    is computed on its own, as if the series began there (its warm-up rows
    are NULL and ``is_warmup``). ``series`` may carry ``is_filled`` (filled
    bars, see :func:`fill_gaps`); they count as bars of the grid.
    """
    n = series.height
    o, h, low, c, v = (series[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    turnover = series["turnover"]
    price_volume = (h + low + c) * (1.0 / 3.0) * v  # typical price * volume, turnover where known
    if turnover.null_count() < n:
        price_volume = np.where(turnover.is_not_null().to_numpy(), turnover.fill_null(0.0).to_numpy(), price_volume)
    ts_us = series["ts"].to_physical().to_numpy()
    starts = segment_starts(ts_us, interval_ms(interval) * 1000)
    bounds = [*starts.tolist(), n]
    parts, ready = [], []
    for lo, hi in zip(bounds, bounds[1:]):
        part = slice(lo, hi)
        cols, htf_ready = segment_features(o[part], h[part], low[part], c[part], v[part], price_volume[part],
                                           ts_us[part], interval)
        parts.append(cols)
        ready.append(htf_ready)
    cols = _Columns.concat(parts)
    htf_ready = ready[0] if len(ready) == 1 else np.concatenate(ready)
    bar_index = np.arange(n, dtype=np.int64)
    segment_bar = bar_index if starts.size == 1 else bar_index - np.repeat(starts, np.diff(bounds))
    if "is_filled" not in series.columns:
        series = series.with_columns(is_filled=pl.lit(False))
    out = series.select("symbol", "interval", "ts", "is_after_gap", "is_filled").hstack(cols.frame())
    out = out.with_columns(
        bar_index=pl.Series(bar_index),
        is_warmup=pl.Series((segment_bar < WARMUP_BARS - 1) | ~htf_ready),
    )
    levels = COARSER_INTERVALS.get(interval)
    out = out.with_columns(
        pl.lit(None if levels is None else levels[level - 1], pl.String).alias(f"htf{level}_interval") for level in (1, 2)
    )
    return out.select(*OUTPUT_FIRST, *[name for name in out.columns if name not in OUTPUT_FIRST and not name.startswith("htf")],
                      *HTF_COLUMNS)


def segment_features(o, h, low, c, v, price_volume, ts_us, interval: str) -> tuple[_Columns, np.ndarray]:
    """The columns of one segment (consecutive bars of the grid) and its coarse-timeframe readiness.

    Each family is one kernel (pipeline.features.recursive for recursions,
    pipeline.features.rolling_windows for windows); the formulas are in their
    docstrings. ``nulls`` beside each column is its NULL warm-up prefix: the
    rows before the indicator's first defined value (TA-Lib's look-back).
    """
    n = c.size
    annualise = math.sqrt(bars_per_year(interval))
    cols = _Columns(n)

    # candle shape: ret = c/c[-1] - 1, log return, range / close, close position and body in the range
    prev_c = np.concatenate(([np.nan], c[:-1]))[:n]
    hl = h - low
    log_ret = log_ratio(c, prev_c)
    # volume and volatility windows (20): CV = std/mean, realized = std(log ret) * sqrt(bars/year),
    # Parkinson = sqrt(mean(ln(h/l)^2) / (4 ln 2)) * sqrt(bars/year)
    vol_sum_20 = rolling_sum(v, 20)
    vol_sma_20 = vol_sum_20 / 20
    realized = np.full(n, np.nan)
    realized[1:] = rolling_std(log_ret[1:], 20, 1) * annualise
    hl_log = log_ratio(h, low)
    parkinson = np.sqrt(rolling_mean(hl_log * hl_log, 20) * (1.0 / (4.0 * math.log(2.0)))) * annualise
    # momentum and trend
    rsi_14 = rsi(c, 14)
    emas = dict(zip(EMA_SPANS, ema_family(c, np.array(EMA_SPANS, dtype=np.int64)), strict=True))
    # Bollinger (20, 2 population std), true range, ATR, OBV, ADX
    bb_mid = rolling_mean(c, 20)
    bb_std = rolling_std(c, 20, 0)
    bb_upper, bb_lower = bb_mid + 2.0 * bb_std, bb_mid - 2.0 * bb_std
    tr = true_range(h, low, c)
    atr_14 = atr(tr, 14)
    obv_ = obv(c, v)
    plus_di, minus_di, adx = directional_index(h, low, tr, 14)
    # VWAP(20) = sum(turnover, else typical price * volume) / sum(volume); close where no volume
    vwap = _ratio(rolling_sum(price_volume, 20), vol_sum_20, c, 19)
    # OBV slope = (OBV - OBV[-20]) / sum(volume, 20), from bar 20 (the first with an OBV 20 bars back);
    # clipped: OBV is a running sum, so when all 20 bars move one way the difference can exceed the
    # rolling volume sum by an ulp (1.0000000000000002 on a persistent synthetic run)
    obv_back = np.concatenate((np.full(min(20, n), np.nan), obv_[:-20]))
    obv_slope = np.clip(_ratio(obv_ - obv_back, vol_sum_20, 0.0, 20), -1.0, 1.0)
    # stochastic %K(14) = 100 (c - lowest low) / (highest high - lowest low), %D = mean(%K, 3)
    hh, ll = rolling_max(h, 14), rolling_min(low, 14)
    stoch_k = 100.0 * _ratio(c - ll, hh - ll, 0.0, 13)
    macd = emas[12] - emas[26]
    macd_signal = ema(macd, 9, 25)
    kc_upper, kc_lower = emas[20] + 2.0 * atr_14, emas[20] - 2.0 * atr_14
    macd_hist = macd - macd_signal

    cols.add("ret_1", c / prev_c - 1.0, 1)
    cols.add("log_ret_1", log_ret, 1)
    cols.add("range_pct", hl / c)
    cols.add("close_pos", _ratio(c - low, hl, 0.5))
    cols.add("body_ratio", _ratio(c - o, hl, 0.0))
    cols.add("volume_cv_20", _ratio(rolling_std(v, 20, 1), vol_sma_20, 0.0, 19), 19)
    cols.add("realized_vol_20", realized, 20)
    cols.add("parkinson_vol_20", parkinson, 19)
    cols.add("rsi_14", rsi_14, 14)
    for span in EMA_SPANS:
        cols.add(f"ema_{span}", emas[span], span - 1)
    cols.add("bb_mid_20", bb_mid, 19)
    cols.add("tr", tr, 1)
    cols.add("obv", obv_)
    cols.add("plus_di_14", plus_di, 14)
    cols.add("minus_di_14", minus_di, 14)
    cols.add("adx_14", adx, 27)
    cols.add("volume_ratio_20", _ratio(v, vol_sma_20, 1.0, 19), 19)
    cols.add("macd", macd, 25)
    cols.add("bb_upper_20", bb_upper, 19)
    cols.add("bb_lower_20", bb_lower, 19)
    cols.add("atr_14", atr_14, 14)
    cols.add("obv_slope_20", obv_slope, 20)
    cols.add("vwap_20", vwap, 19)
    cols.add("stoch_k_14", stoch_k, 13)
    for span in (9, 21, 50, 200):
        cols.add(f"ema_dist_{span}", c / emas[span] - 1.0, span - 1)
    cols.add("macd_signal", macd_signal, 33)
    cols.add("bb_pct_b_20", _ratio(c - bb_lower, bb_upper - bb_lower, 0.5, 19), 19)
    cols.add("bb_width_20", (bb_upper - bb_lower) / bb_mid, 19)
    cols.add("atr_pct_14", atr_14 / c, 14)
    cols.add("obv_direction", np.sign(np.nan_to_num(obv_slope)).astype(np.int8), 20)
    cols.add("vwap_dist_20", c / vwap - 1.0, 19)
    cols.add("stoch_d_3", rolling_mean(stoch_k, 3), 15)
    cols.add("kc_upper_20", kc_upper, 19)
    cols.add("kc_lower_20", kc_lower, 19)
    cols.add("macd_hist", macd_hist, 33)
    cols.add("macd_pct", macd / c, 25)
    cols.add("macd_signal_pct", macd_signal / c, 33)
    cols.add("kc_pos_20", _ratio(c - kc_lower, kc_upper - kc_lower, 0.5, 19), 19)
    cols.add("macd_hist_pct", macd_hist / c, 33)

    htf_ready = join_coarser(cols, ts_us, c, interval)
    return cols, htf_ready


def _bucket_start_us(ts_us: np.ndarray, coarse_interval: str) -> np.ndarray:
    """The open time (epoch us) of the coarse bar holding each ts: floor to the bar length, weeks from Monday."""
    every = interval_ms(coarse_interval) * 1000
    offset = _WEEK_OFFSET_US if coarse_interval == "W" else 0
    return (ts_us - offset) // every * every + offset


def coarse_bars(ts_us: np.ndarray, close: np.ndarray, base_interval: str, coarse_interval: str):
    """Coarser bars of one segment (consecutive base bars, sorted): when each is visible, and its indicators.

    Only complete buckets make coarse bars: a bucket cut by the segment's
    start or end (a missing base bar) makes none, so its rows see no coarse
    bar of their own. A coarse bar's close is the close of its last base
    candle. It is visible on a base row only once its last base bar has
    opened (``available_from = coarse open + coarse length - base length``),
    i.e. once every base candle in it is known. Returns (available_from_us,
    {name: (values, nulls)}).
    """
    bucket = _bucket_start_us(ts_us, coarse_interval)
    last = np.flatnonzero(np.append(bucket[1:] != bucket[:-1], True)) if ts_us.size else np.zeros(0, np.int64)
    first = np.concatenate(([0], last[:-1] + 1))
    per_bucket = interval_ms(coarse_interval) // interval_ms(base_interval)
    last = last[last - first + 1 == per_bucket]
    closes = close[last]
    available_from = bucket[last] + (interval_ms(coarse_interval) - interval_ms(base_interval)) * 1000
    annualise = math.sqrt(bars_per_year(coarse_interval))
    log_ret = log_ratio(closes, np.concatenate(([np.nan], closes[:-1]))[: closes.size])
    realized = np.full(closes.size, np.nan)
    realized[1:] = rolling_std(log_ret[1:], 20, 1) * annualise
    features = {
        "log_ret": (log_ret, 1),
        "rsi_14": (rsi(closes, 14), 14),
        "realized_vol_20": (realized, 20),
        "ema_21": (ema(closes, 21, 0), 20),
    }
    return available_from, features


def join_coarser(cols: _Columns, ts_us: np.ndarray, close: np.ndarray, interval: str) -> np.ndarray:
    """Add the features of the two coarser timeframes as of each base row (no look-ahead); return htf readiness.

    Each base row reads the last coarse bar with ``available_from <= ts``.
    ``htf{level}_ema_dist_21`` compares the base close with the coarse EMA21
    of that bar. Ready once both timeframes have HTF_WARMUP_BARS bars.
    """
    levels = COARSER_INTERVALS.get(interval)
    n = ts_us.size
    if levels is None:
        for level in (1, 2):
            for name in HTF_FEATURES:
                cols.add(f"htf{level}_{name}", np.zeros(n), n)
        return np.zeros(n, dtype=bool)
    ready = np.ones(n, dtype=bool)
    for level, coarse_interval in enumerate(levels, start=1):
        available_from, features = coarse_bars(ts_us, close, interval, coarse_interval)
        row = _asof_rows(available_from, ts_us)  # -1: no coarse bar visible yet
        take = np.maximum(row, 0)

        def visible(values: np.ndarray, nulls: int, take=take, row=row) -> tuple[np.ndarray, int]:
            # rows are non-decreasing, so the NULL rows (no bar yet, or a bar in warm-up) are a prefix
            if values.size == 0:  # no complete coarse bar in the segment
                return np.full(row.size, np.nan), row.size
            return np.take(values, take), int(np.searchsorted(row, nulls, side="left"))

        ema_21, ema_nulls = visible(*features["ema_21"])
        for name in HTF_FEATURES:
            if name == "ema_dist_21":
                cols.add(f"htf{level}_ema_dist_21", close / ema_21 - 1.0, ema_nulls)
            else:
                cols.add(f"htf{level}_{name}", *visible(*features[name]))
        ready &= row >= HTF_WARMUP_BARS - 1
    return ready


def _asof_market_structure(
    out: pl.DataFrame,
    interval: str,
    funding: pl.DataFrame | None,
    open_interest: pl.DataFrame | None,
    orderbook: pl.DataFrame | None,
) -> pl.DataFrame:
    symbol = out["symbol"][0]
    base_ms = interval_ms(interval)

    def for_symbol(frame: pl.DataFrame | None, columns: Iterable[str]) -> pl.DataFrame | None:
        if frame is None or frame.is_empty():
            return None
        part = frame.filter(pl.col("symbol") == symbol).select(["ts", *columns]).sort("ts")
        return part if part.height else None

    fund = for_symbol(funding, ["funding_rate"])
    if fund is None:
        out = out.with_columns(funding_rate=pl.lit(None, pl.Float64))
    else:
        fund = fund.rename({"ts": "_funding_ts"})
        out = out.join_asof(fund, left_on="ts", right_on="_funding_ts", strategy="backward", tolerance=FUNDING_MAX_AGE).drop(
            "_funding_ts"
        )

    oi = for_symbol(open_interest, ["open_interest"])
    if oi is None:
        out = out.with_columns(oi_log_change=pl.lit(None, pl.Float64))
    else:
        oi = oi.rename({"ts": "_oi_ts"})
        out = (
            out.join_asof(oi, left_on="ts", right_on="_oi_ts", strategy="backward", tolerance="1d")
            .with_columns(oi_log_change=(pl.col("open_interest") / pl.col("open_interest").shift(1)).log())
            .drop(["_oi_ts", "open_interest"])
        )

    book = for_symbol(orderbook, ["ob_spread_bps", "ob_top_imbalance", "ob_depth_imbalance_5"])
    if book is None:
        out = out.with_columns(
            ob_spread_bps=pl.lit(None, pl.Float64),
            ob_top_imbalance=pl.lit(None, pl.Float64),
            ob_depth_imbalance_5=pl.lit(None, pl.Float64),
        )
    else:
        # the last snapshot taken while the bar was open: ts <= snapshot < ts + interval
        book = book.rename({"ts": "_book_ts"})
        last_us = pl.col("ts") + pl.duration(microseconds=base_ms * 1000 - 1)
        out = (
            out.with_columns(_bar_last=last_us)
            .join_asof(
                book,
                left_on="_bar_last",
                right_on="_book_ts",
                strategy="backward",
                tolerance=f"{base_ms * 1000 - 1}us",
            )
            .drop(["_bar_last", "_book_ts"])
        )
    return out


def _sorted_series(candles: pl.DataFrame) -> list[pl.DataFrame]:
    """The (symbol, interval) series of ``candles``, each sorted by ts, in (symbol, interval) order.

    Input already in key order (what the dbt model passes) is only checked and
    sliced; anything else is sorted first. A duplicate ts is a clear error.
    """
    for attempt in ("as given", "sorted"):
        keys = candles.select(
            _start=(pl.col("symbol") != pl.col("symbol").shift(1)) | (pl.col("interval") != pl.col("interval").shift(1))
        )["_start"]
        starts = np.flatnonzero(keys.fill_null(True).to_numpy()) if candles.height else np.zeros(0, np.int64)
        bounds = [*starts.tolist(), candles.height]
        labels = [(candles["symbol"][i], candles["interval"][i]) for i in starts.tolist()]
        ts_us = candles["ts"].to_physical().to_numpy()
        step = np.diff(ts_us)
        step[starts[1:] - 1] = 1  # a new series may start at any ts
        in_order = all(a < b for a, b in zip(labels, labels[1:])) and not (step < 0).any()
        if in_order:
            break
        candles = candles.sort(KEYS)
    if (step == 0).any():
        at = int(np.argmax(step == 0)) + 1
        symbol, interval = candles["symbol"][at], candles["interval"][at]
        raise ValueError(
            f"candles for {symbol} {interval}: duplicate ts {candles['ts'][at]} (deduplicate in stg_candles first)"
        )
    return [candles.slice(lo, hi - lo) for lo, hi in zip(bounds, bounds[1:])]


def check_gap_policy(gap_policy: str, max_fill_bars: int | None) -> int:
    """``max_fill_bars`` to use (the Settings default when None); a clear error on a bad policy or count."""
    if gap_policy not in GAP_POLICIES:
        raise ValueError(f"gap policy {gap_policy!r} (CONVTRADE_GAP_POLICY): use one of {', '.join(GAP_POLICIES)}")
    max_fill_bars = Settings.max_fill_bars if max_fill_bars is None else max_fill_bars
    if isinstance(max_fill_bars, bool) or not isinstance(max_fill_bars, int) or max_fill_bars < 0:
        raise ValueError(f"max_fill_bars={max_fill_bars!r} (CONVTRADE_MAX_FILL_BARS) must be a bar count >= 0")
    return max_fill_bars


def compute_candle_features(
    candles: pl.DataFrame,
    funding: pl.DataFrame | None = None,
    open_interest: pl.DataFrame | None = None,
    orderbook: pl.DataFrame | None = None,
    gap_policy: str = "segment",
    max_fill_bars: int | None = None,
) -> pl.DataFrame:
    """``features.candle_features`` for every (symbol, interval) in ``candles``.

    ``candles``: symbol, interval, ts, open, high, low, close, volume, turnover
    (nullable), optionally is_after_gap; one row per key. ``funding``: symbol,
    ts, funding_rate. ``open_interest``: symbol, ts, open_interest.
    ``orderbook``: symbol, ts, ob_spread_bps, ob_top_imbalance,
    ob_depth_imbalance_5 (see stg_orderbook).

    ``gap_policy`` (Settings.gap_policy): ``"segment"`` restarts every
    indicator after a missing bar; ``"fill"`` first fills gaps of at most
    ``max_fill_bars`` bars with flat candles (rows with ``is_filled``), longer
    gaps are segmented.
    """
    max_fill_bars = check_gap_policy(gap_policy, max_fill_bars)
    missing = [c for c in ("symbol", "interval", "ts", "open", "high", "low", "close", "volume") if c not in candles.columns]
    if missing:
        raise ValueError(f"candles frame lacks column(s) {', '.join(missing)}; have {', '.join(candles.columns)}")
    if "turnover" not in candles.columns:
        candles = candles.with_columns(turnover=pl.lit(None, pl.Float64))
    flag_gaps = "is_after_gap" not in candles.columns  # then flagged per series below, as stg_candles does
    if flag_gaps:
        candles = candles.with_columns(is_after_gap=pl.lit(False))
    candles = candles.select(
        "symbol",
        "interval",
        pl.col("ts").cast(pl.Datetime("us")),
        *[pl.col(name).cast(pl.Float64) for name in ("open", "high", "low", "close", "volume", "turnover")],
        "is_after_gap",
    )
    for name in ("symbol", "interval", "ts", "open", "high", "low", "close", "volume"):
        if candles[name].null_count():
            row = candles.row(int(candles[name].is_null().arg_max()), named=True)
            raise ValueError(f"candles for {row['symbol']} {row['interval']}: NULL {name} at ts {row['ts']}")
    frames = []
    for series in _sorted_series(candles):
        interval = series["interval"][0]
        step_us = interval_ms(interval) * 1000  # clear error on an unknown interval code
        if flag_gaps:  # bars missing just before this one
            ts_us = series["ts"].to_physical().to_numpy()
            series = series.with_columns(is_after_gap=pl.Series(np.concatenate(([False], np.diff(ts_us) > step_us))))
        if gap_policy == "fill":
            series = fill_gaps(series, step_us, max_fill_bars)
        out = series_features(series, interval)
        frames.append(_asof_market_structure(out, interval, funding, open_interest, orderbook))
    if not frames:
        return empty_candle_features()
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")


def features_for_window(
    candles: pl.DataFrame,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    funding: pl.DataFrame | None = None,
    open_interest: pl.DataFrame | None = None,
    orderbook: pl.DataFrame | None = None,
    gap_policy: str = "segment",
    max_fill_bars: int | None = None,
) -> pl.DataFrame:
    """The rows of compute_candle_features with ``start - lookback <= ts < end`` (a bound of None: open).

    ``lookback`` is 0 under the segment policy and ``max_fill_bars`` bars
    (of each row's interval) under fill: a candle arriving at ``start`` can
    fill a gap that began before it, so those filled rows belong to this run
    (the dbt model's ``replace_range`` also replaces every key it returns).

    Only series with candles on both sides of the window's start and end
    (a candle before ``end`` and one at or after ``start``: a filled gap can
    cover a window without candles) are computed, each over its whole
    history (recursions need it), so the rows equal those of a full build.
    Bounds are datetimes or 'YYYY-MM-DD HH:MM:SS' strings (UTC, naive).
    """
    max_fill_bars = check_gap_policy(gap_policy, max_fill_bars)
    gaps = {"gap_policy": gap_policy, "max_fill_bars": max_fill_bars}
    lookback_bars = max_fill_bars if gap_policy == "fill" else 0
    step_ms = {name: interval_ms(name) for name in candles["interval"].unique().to_list()}
    lookback = pl.duration(milliseconds=pl.col("interval").replace_strict(step_ms, return_dtype=pl.Int64) * lookback_bars)
    in_window = pl.lit(True)
    spans_window = pl.lit(True)  # on the per-series first / last ts
    for bound, keep, side in ((start, pl.Expr.__ge__, "last"), (end, pl.Expr.__lt__, "first")):
        if bound is None or bound == "":
            continue
        try:
            value = dt.datetime.fromisoformat(bound) if isinstance(bound, str) else bound
        except ValueError:
            raise ValueError(f"window bound {bound!r} is not a timestamp like '2025-01-01 00:00:00'") from None
        value = pl.lit(value, pl.Datetime("us"))
        if side == "last" and lookback_bars:
            value = value - lookback
        in_window = in_window & keep(pl.col("ts"), value)
        spans_window = spans_window & keep(pl.col(side), value)
    if start in (None, "") and end in (None, ""):
        return compute_candle_features(candles, funding, open_interest, orderbook, **gaps)
    series = (
        candles.group_by("symbol", "interval", maintain_order=True)
        .agg(first=pl.col("ts").min(), last=pl.col("ts").max())
        .filter(spans_window)
        .select("symbol", "interval")
    )
    if series.is_empty():
        return empty_candle_features()
    if series.height < candles.select("symbol", "interval").n_unique():
        candles = candles.join(series, on=["symbol", "interval"], how="semi", maintain_order="left")
    return compute_candle_features(candles, funding, open_interest, orderbook, **gaps).filter(in_window)


def empty_candle_features() -> pl.DataFrame:
    """The output schema with no rows (a model run over an empty warehouse)."""
    one = pl.DataFrame({"symbol": ["X"], "interval": ["60"]}).with_columns(
        ts=pl.lit(0).cast(pl.Datetime("us")), open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0
    )
    return compute_candle_features(one).clear()
