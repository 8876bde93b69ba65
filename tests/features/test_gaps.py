"""Gaps in the candle grid: every indicator restarts after a missing bar (policy ``segment``), or short gaps are
filled with flat candles first (policy ``fill``).

Oracle: real BTCUSDT 1h candles with bars deleted (single bars, two single bars one apart, a run of 11 and a run
of 600, longer than the longest feature window: 21 daily bars). Each segment of consecutive bars is handed to
TA-Lib (and numpy for the rest) alone, as if the series began there; our columns must be NULL exactly during
each indicator's look-back and equal the reference to 1e-9 after it. Under ``fill`` the reference is the same
on the series filled independently here (polars upsample), split only at gaps longer than max_fill_bars.
Coarser timeframes: only complete buckets of the segment make coarse bars.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
import talib

from pipeline.config import Settings
from pipeline.features.candle_features import WARMUP_BARS, compute_candle_features

RTOL = 1e-9
HOUR = dt.timedelta(hours=1)
# (first deleted row, bars deleted), positions in the ungapped slice
DELETIONS = ((1500, 1), (1502, 1), (3000, 11), (5000, 1), (6500, 600), (9000, 1))


@pytest.fixture(scope="module")
def gapped(real_candles) -> pl.DataFrame:
    candles = real_candles("BTCUSDT", "60").filter(pl.col("ts").is_between(dt.datetime(2023, 1, 1), dt.datetime(2024, 4, 1)))
    drop = np.zeros(candles.height, dtype=bool)
    for first, bars in DELETIONS:
        drop[first:first + bars] = True
    return candles.filter(~pl.Series(drop))


def filled_reference(candles: pl.DataFrame, max_fill_bars: int) -> pl.DataFrame:
    """Gaps of at most max_fill_bars bars filled with flat candles at the previous close, volume 0."""
    grid = candles.upsample("ts", every="1h").with_columns(is_filled=pl.col("close").is_null())
    run = (pl.col("is_filled") != pl.col("is_filled").shift(1)).fill_null(True).cum_sum()
    grid = grid.with_columns(run_length=pl.len().over(run)).filter(~pl.col("is_filled") | (pl.col("run_length") <= max_fill_bars))
    close = pl.col("close").forward_fill()
    return grid.with_columns(
        symbol=pl.col("symbol").forward_fill(), interval=pl.col("interval").forward_fill(),
        open=pl.coalesce("open", close), high=pl.coalesce("high", close), low=pl.coalesce("low", close),
        close=close, volume=pl.col("volume").fill_null(0.0),
    ).drop("run_length")


def segments(frame: pl.DataFrame) -> list[pl.DataFrame]:
    seg = (pl.col("ts").diff() != HOUR).fill_null(True).cum_sum()
    return frame.with_columns(_seg=seg).partition_by("_seg", maintain_order=True)


def _window(x: np.ndarray, n: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, n)


def _trailing(values: np.ndarray, n: int, size: int) -> np.ndarray:
    """``values`` (one per full window) placed at the window ends of a ``size``-long array."""
    out = np.full(size, np.nan)
    if values.size:
        out[n - 1:] = values
    return out


def reference_columns(seg: pl.DataFrame) -> dict[str, tuple[np.ndarray, int]]:
    """{column: (reference values, look-back)} of one segment, from TA-Lib and numpy only."""
    o, h, low, c, v = (seg[k].to_numpy().astype(float) for k in ("open", "high", "low", "close", "volume"))
    n = c.size
    turnover = seg["turnover"].to_numpy().astype(float)
    prev = np.concatenate([[np.nan], c[:-1]])
    log_ret = np.log(c / prev)
    per_year = math.sqrt(365 * 24)
    ref: dict[str, tuple[np.ndarray, int]] = {
        "ret_1": (c / prev - 1, 1),
        "log_ret_1": (log_ret, 1),
        "range_pct": ((h - low) / c, 0),
        "rsi_14": (talib.RSI(c, 14), 14),
        "tr": (talib.TRANGE(h, low, c), 1),
        "atr_14": (talib.ATR(h, low, c, 14), 14),
        "plus_di_14": (talib.PLUS_DI(h, low, c, 14), 14),
        "minus_di_14": (talib.MINUS_DI(h, low, c, 14), 14),
        "adx_14": (talib.ADX(h, low, c, 14), 27),
        "obv": (talib.OBV(c, v), 0),
        "stoch_k_14": (talib.STOCHF(h, low, c, 14, 1, 0)[0], 13),
        "stoch_d_3": (talib.STOCHF(h, low, c, 14, 3, 0)[1], 15),
        "atr_pct_14": (talib.ATR(h, low, c, 14) / c, 14),
    }
    for span in (9, 12, 20, 21, 26, 50, 200):
        ref[f"ema_{span}"] = (talib.EMA(c, span), span - 1)
    for span in (9, 21, 50, 200):
        ref[f"ema_dist_{span}"] = (c / talib.EMA(c, span) - 1, span - 1)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    ref |= {"bb_upper_20": (upper, 19), "bb_mid_20": (middle, 19), "bb_lower_20": (lower, 19),
            "bb_pct_b_20": ((c - lower) / (upper - lower), 19), "bb_width_20": ((upper - lower) / middle, 19)}
    line = talib.EMA(c, 12) - talib.EMA(c, 26)
    signal = np.full(n, np.nan)
    if n > 25:
        signal[25:] = talib.EMA(line[25:], 9)
    ref |= {"macd": (line, 25), "macd_signal": (signal, 33), "macd_hist": (line - signal, 33), "macd_pct": (line / c, 25)}
    kc_mid, kc_atr = talib.EMA(c, 20), talib.ATR(h, low, c, 14)
    ref["kc_pos_20"] = ((c - (kc_mid - 2 * kc_atr)) / (4 * kc_atr), 19)
    realized = np.full(n, np.nan)
    if n >= 21:  # std of the 20 log returns ending at the row (the first return is on bar 1)
        realized[20:] = _window(log_ret[1:], 20).std(axis=1, ddof=1) * per_year
    ref["realized_vol_20"] = (realized, 20)
    if n >= 20:
        park = np.sqrt(_window(np.log(h / low) ** 2, 20).mean(axis=1) / (4 * math.log(2))) * per_year
        pv = np.where(np.isnan(turnover), (h + low + c) / 3 * v, turnover)
        vol_sum = _window(v, 20).sum(axis=1)
        obv = talib.OBV(c, v)
        ref |= {
            "parkinson_vol_20": (_trailing(park, 20, n), 19),
            "vwap_20": (_trailing(_window(pv, 20).sum(axis=1) / vol_sum, 20, n), 19),
            "volume_ratio_20": (v / _trailing(vol_sum / 20, 20, n), 19),
            "volume_cv_20": (_trailing(_window(v, 20).std(axis=1, ddof=1) / (vol_sum / 20), 20, n), 19),
            "obv_slope_20": (np.concatenate([[np.nan] * 20, (obv[20:] - obv[:-20]) / vol_sum[1:]])[:n], 20),
        }
    return ref


def coarse_reference(seg: pl.DataFrame, every: str, per_bucket: int) -> pl.DataFrame:
    """Per row of the segment: the coarse RSI / EMA21 distance / log return of the last complete bucket
    visible at ts (visible from its last hour on), and how many complete buckets that is."""
    buckets = (
        seg.group_by(pl.col("ts").dt.truncate(every).alias("bucket"), maintain_order=True)
        .agg(rows=pl.len(), close=pl.col("close").last(), visible_from=pl.col("ts").max())
        .filter(pl.col("rows") == per_bucket)
    )
    closes = buckets["close"].to_numpy().astype(float)
    k = closes.size
    rsi = talib.RSI(closes, 14) if k > 14 else np.full(k, np.nan)
    ema = talib.EMA(closes, 21) if k > 20 else np.full(k, np.nan)
    log_ret = np.log(closes / np.concatenate([[np.nan], closes[:-1]])) if k else closes
    table = buckets.select("visible_from").with_columns(
        position=pl.int_range(pl.len()), rsi=pl.Series(rsi, dtype=pl.Float64),
        ema=pl.Series(ema, dtype=pl.Float64), log_ret=pl.Series(log_ret, dtype=pl.Float64),
    ).with_columns(pl.col("visible_from").cast(pl.Datetime("us")))
    return seg.select("ts", "close").join_asof(table, left_on="ts", right_on="visible_from", strategy="backward")


def assert_column(name: str, ours: pl.Series, ref: np.ndarray, lookback: int, where: str) -> None:
    nulls = ours.is_null().to_numpy()
    k = min(lookback, ours.len())
    assert nulls[:k].all(), f"{name} ({where}): a value during its {lookback}-bar warm-up (must be NULL)"
    values = ours.cast(pl.Float64).to_numpy()[k:]
    ref = np.asarray(ref, dtype=float)[k:]
    assert not nulls[k:].any(), f"{name} ({where}): NULL after its warm-up, first at row {k + int(np.argmax(nulls[k:]))}"
    assert not np.isnan(ref).any(), f"{name} ({where}): reference has NaN after its look-back"
    if values.size == 0:
        return
    floor = RTOL * np.median(np.abs(ref))
    bad = np.abs(values - ref) > RTOL * np.abs(ref) + floor
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(f"{name} ({where}): {int(bad.sum())} rows differ, first at row {k + i}: "
                             f"ours {values[i]!r}, reference {ref[i]!r}")


def check_against_segments(features: pl.DataFrame, reference: pl.DataFrame) -> int:
    """Compare ``features`` with the oracle on every segment of ``reference`` (rows of the same ts)."""
    assert features["ts"].to_list() == reference["ts"].to_list()
    checked = 0
    for seg in segments(reference):
        lo = seg["ts"][0]
        ours = features.filter(pl.col("ts").is_between(lo, seg["ts"][-1]))
        where = f"segment from {lo}, {seg.height} bars"
        for name, (ref, lookback) in reference_columns(seg).items():
            assert_column(name, ours[name], ref, lookback, where)
        ready = np.ones(seg.height, dtype=bool)
        for level, (every, per_bucket) in enumerate((("4h", 4), ("1d", 24)), start=1):
            coarse = coarse_reference(seg, every, per_bucket)
            position = coarse["position"].fill_null(-1).to_numpy()
            for name, column, lookback in (("rsi_14", "rsi", 14), ("log_ret", "log_ret", 1)):
                expected = coarse[column].to_numpy().astype(float)
                shown = position >= lookback
                col = ours[f"htf{level}_{name}"]
                assert (col.is_null().to_numpy() == ~shown).all(), f"htf{level}_{name} ({where}): NULL rows differ"
                assert_column(f"htf{level}_{name}", col.filter(pl.Series(shown)), expected[shown], 0, where)
            shown = position >= 20
            dist = coarse["close"].to_numpy() / coarse["ema"].to_numpy().astype(float) - 1
            col = ours[f"htf{level}_ema_dist_21"]
            assert (col.is_null().to_numpy() == ~shown).all(), f"htf{level}_ema_dist_21 ({where}): NULL rows differ"
            assert_column(f"htf{level}_ema_dist_21", col.filter(pl.Series(shown)), dist[shown], 0, where)
            ready &= shown
        expected_warmup = (np.arange(seg.height) < WARMUP_BARS - 1) | ~ready
        assert (ours["is_warmup"].to_numpy() == expected_warmup).all(), f"is_warmup ({where})"
        checked += 1
    return checked


def test_segment_policy_restarts_every_indicator_after_a_gap(gapped):
    features = compute_candle_features(gapped)  # segment is the default
    assert Settings().gap_policy == "segment"
    assert not features["is_filled"].any()
    assert check_against_segments(features, gapped) == 7  # one segment is a single bar
    # returns across a gap are NULL, and the row after a gap says so
    after = features.filter(pl.col("is_after_gap"))
    assert after.height == len(DELETIONS) and after["ret_1"].is_null().all() and after["rsi_14"].is_null().all()
    # warm-up is NULL, never a placeholder (RSI/%K 0, %B 0.5 before this change)
    head = features.head(13)
    for name in ("rsi_14", "stoch_k_14", "bb_pct_b_20", "kc_pos_20", "vwap_dist_20", "volume_ratio_20", "obv_slope_20"):
        assert head[name].is_null().all(), name


@pytest.mark.parametrize("max_fill_bars", [11, 10])
def test_fill_policy_equals_talib_on_the_filled_series(gapped, max_fill_bars):
    """max 11: the singles and the run of 11 are filled, the run of 600 stays a gap; max 10: the run of 11 too."""
    features = compute_candle_features(gapped, gap_policy="fill", max_fill_bars=max_fill_bars)
    reference = filled_reference(gapped, max_fill_bars)
    check_against_segments(features, reference)
    filled = features.filter(pl.col("is_filled"))
    assert filled.height == 4 + (11 if max_fill_bars >= 11 else 0)
    assert (filled["ts"] == reference.filter(pl.col("is_filled"))["ts"]).all()
    flat = reference.filter(pl.col("is_filled"))
    assert (flat["open"] == flat["close"]).all() and (flat["high"] == flat["low"]).all() and (flat["volume"] == 0).all()
    # the gaps left are the ones longer than max_fill_bars
    assert features.filter(pl.col("ret_1").is_null()).height == 2 + (1 if max_fill_bars < 11 else 0)


def test_gap_policy_is_a_setting_with_clear_errors(gapped):
    settings = Settings.from_env({"CONVTRADE_GAP_POLICY": "fill", "CONVTRADE_MAX_FILL_BARS": "3"})
    assert (settings.gap_policy, settings.max_fill_bars) == ("fill", 3)
    with pytest.raises(ValueError, match="CONVTRADE_GAP_POLICY='ffill'"):
        Settings.from_env({"CONVTRADE_GAP_POLICY": "ffill"})
    with pytest.raises(ValueError, match="CONVTRADE_MAX_FILL_BARS=-1"):
        Settings.from_env({"CONVTRADE_MAX_FILL_BARS": "-1"})
    with pytest.raises(ValueError, match="gap policy 'interpolate'"):
        compute_candle_features(gapped.head(50), gap_policy="interpolate")
