"""Indicators of features.candle_features against TA-Lib 0.8.2 on real BTCUSDT 1h candles.

Built through dbt (the real pipeline), compared after each indicator's
TA-Lib look-back to 1e-9 relative; the absolute floor (1e-9 of the series'
median magnitude) only matters where a value crosses zero (MACD, OBV).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import talib

RTOL = 1e-9


def assert_close(name: str, ours, ref, start: int) -> None:
    ours = np.asarray(ours, dtype=float)[start:]
    ref = np.asarray(ref, dtype=float)[start:]
    assert not np.isnan(ref).any(), f"{name}: TA-Lib reference has NaN after index {start}"
    assert not np.isnan(ours).any(), f"{name}: NULL/NaN in our column after index {start}"
    floor = RTOL * np.median(np.abs(ref))
    bad = np.abs(ours - ref) > RTOL * np.abs(ref) + floor
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(f"{name}: {bad.sum()} rows differ, first at row {start + i}: ours {ours[i]!r}, TA-Lib {ref[i]!r}")


@pytest.fixture(scope="module")
def btc(btc_warehouse, real_candles, helpers):
    candles = real_candles("BTCUSDT", "60")
    features = helpers["table"](btc_warehouse, "features.candle_features")
    assert features.height == candles.height
    assert (features["ts"] == candles["ts"]).all()
    arrays = {k: candles[k].to_numpy().astype(float) for k in ("open", "high", "low", "close", "volume")}
    return features, arrays, candles


def test_rsi_ema_atr_match_talib(btc):
    f, a, _ = btc
    assert_close("rsi_14", f["rsi_14"], talib.RSI(a["close"], 14), 14)
    for n in (9, 12, 20, 21, 26, 50, 200):
        assert_close(f"ema_{n}", f[f"ema_{n}"], talib.EMA(a["close"], n), n - 1)
    assert_close("tr", f["tr"], talib.TRANGE(a["high"], a["low"], a["close"]), 1)
    assert_close("atr_14", f["atr_14"], talib.ATR(a["high"], a["low"], a["close"], 14), 14)


def test_adx_and_directional_indicators_match_talib(btc):
    f, a, _ = btc
    h, low, c = a["high"], a["low"], a["close"]
    assert_close("plus_di_14", f["plus_di_14"], talib.PLUS_DI(h, low, c, 14), 14)
    assert_close("minus_di_14", f["minus_di_14"], talib.MINUS_DI(h, low, c, 14), 14)
    assert_close("adx_14", f["adx_14"], talib.ADX(h, low, c, 14), 27)


def test_bollinger_obv_stochastic_match_talib(btc):
    f, a, _ = btc
    upper, middle, lower = talib.BBANDS(a["close"], 20, 2.0, 2.0, 0)
    assert_close("bb_upper_20", f["bb_upper_20"], upper, 19)
    assert_close("bb_mid_20", f["bb_mid_20"], middle, 19)
    assert_close("bb_lower_20", f["bb_lower_20"], lower, 19)
    assert_close("bb_pct_b_20", f["bb_pct_b_20"], (a["close"] - lower) / (upper - lower), 19)
    assert_close("obv", f["obv"], talib.OBV(a["close"], a["volume"]), 0)
    k, d = talib.STOCHF(a["high"], a["low"], a["close"], 14, 3, 0)
    assert_close("stoch_k_14", f["stoch_k_14"], k, 15)
    assert_close("stoch_d_3", f["stoch_d_3"], d, 15)


def test_macd_documented_formula_and_talib_after_convergence(btc):
    """Our MACD = EMA12 - EMA26 with both EMAs seeded at the series start (documented);
    TA-Lib's MACD seeds the fast EMA at bar 25 instead, so it agrees only once that
    seed has decayed ((11/13)^k < 1e-15 after ~200 bars)."""
    f, a, _ = btc
    line = talib.EMA(a["close"], 12) - talib.EMA(a["close"], 26)
    assert_close("macd (EMA12-EMA26)", f["macd"], line, 25)
    signal = np.full_like(line, np.nan)
    signal[25:] = talib.EMA(line[25:], 9)
    assert_close("macd_signal (EMA9 of macd)", f["macd_signal"], signal, 33)
    assert_close("macd_hist", f["macd_hist"], line - signal, 33)
    ref_line, ref_signal, ref_hist = talib.MACD(a["close"], 12, 26, 9)
    assert_close("macd vs TA-Lib MACD", f["macd"], ref_line, 33 + 200)
    assert_close("macd_signal vs TA-Lib MACD", f["macd_signal"], ref_signal, 33 + 200)
    assert_close("macd_hist vs TA-Lib MACD", f["macd_hist"], ref_hist, 33 + 200)


def _windows(x: np.ndarray, n: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, n)


def test_window_features_match_numpy(btc):
    """Features TA-Lib lacks, against direct numpy formulas."""
    f, a, candles = btc
    c, h, low, v = a["close"], a["high"], a["low"], a["volume"]
    per_year = math.sqrt(365 * 24)
    log_ret = np.log(c[1:] / c[:-1])
    realized = np.full_like(c, np.nan)
    realized[20:] = _windows(log_ret, 20).std(axis=1, ddof=1) * per_year
    assert_close("realized_vol_20", f["realized_vol_20"], realized, 20)
    park = np.full_like(c, np.nan)
    park[19:] = np.sqrt((_windows(np.log(h / low) ** 2, 20).mean(axis=1)) / (4 * math.log(2))) * per_year
    assert_close("parkinson_vol_20", f["parkinson_vol_20"], park, 19)
    turnover = candles["turnover"].to_numpy().astype(float)
    pv = np.where(np.isnan(turnover), (h + low + c) / 3 * v, turnover)
    vwap = np.full_like(c, np.nan)
    vwap[19:] = _windows(pv, 20).sum(axis=1) / _windows(v, 20).sum(axis=1)
    assert_close("vwap_20", f["vwap_20"], vwap, 19)
    ratio = np.full_like(c, np.nan)
    ratio[19:] = v[19:] / _windows(v, 20).mean(axis=1)
    assert_close("volume_ratio_20", f["volume_ratio_20"], ratio, 19)
    assert_close("close_pos", f["close_pos"], (c - low) / (h - low), 0)


def test_coarse_timeframe_rsi_and_visibility(btc):
    """htf1 on 1h bars is 4h. Its RSI equals TA-Lib RSI of the 4h closes (the 1h close of
    each complete bucket's last hour: the file has no gaps, but starts at 10:00, mid-bucket,
    and an incomplete bucket makes no coarse bar), and a 4h bar becomes visible on the
    1h row of its last hour, not before (no look-ahead)."""
    f, a, candles = btc
    last_hour = candles["ts"].dt.hour() % 4 == 3
    first_complete = candles.filter(candles["ts"].dt.hour() % 4 == 0)["ts"][0]
    closes_4h = candles.filter(last_hour & (pl.col("ts") > first_complete)).select("ts", "close")
    ref = pl.DataFrame({"ts": closes_4h["ts"], "ref": talib.RSI(closes_4h["close"].to_numpy().astype(float), 14)})
    ours = f.select("ts", "htf1_rsi_14", "htf1_interval").join(ref, on="ts", how="inner").filter(pl.col("ref").is_not_nan())
    assert ours.height > 12_000 and (ours["htf1_interval"] == "240").all()
    assert_close("htf1_rsi_14", ours["htf1_rsi_14"], ours["ref"], 0)
    # one hour earlier the bar is still open: the row shows the previous 4h bar's RSI
    earlier = f.select("ts", "htf1_rsi_14").join(
        ref.with_columns(pl.col("ts") - pl.duration(hours=1), prev=pl.col("ref").shift(1)), on="ts", how="inner"
    ).filter(pl.col("prev").is_not_nan())
    assert_close("htf1_rsi_14 before close", earlier["htf1_rsi_14"], earlier["prev"], 0)


def test_model_inputs_finite_after_warmup(btc):
    from pipeline.core.columns import MODEL_INPUT_COLUMNS

    f, _, _ = btc
    warm = f.filter(~pl.col("is_warmup"))
    assert warm.height == f.height - int(f["is_warmup"].sum())
    for column in MODEL_INPUT_COLUMNS:
        values = warm[column].cast(pl.Float64)
        assert values.null_count() == 0 and values.is_finite().all(), column
    # warm-up ends once EMA200 is seeded and 21 daily bars have closed (about 21 days of 1h bars)
    first_warm = int(f.filter(~pl.col("is_warmup"))["bar_index"].min())
    assert 20 * 24 <= first_warm <= 22 * 24 + 24


def test_labels_match_numpy(btc_warehouse, btc):
    """Forward return, direction (threshold 0.002) and forward volatility against numpy; the
    last `horizon` rows have no known future and stay NULL."""
    _, a, candles = btc
    labels = btc_warehouse.query("select * from features.labels order by horizon, ts")
    c = a["close"]
    log_ret = np.concatenate([[np.nan], np.log(c[1:] / c[:-1])])
    for h in (1, 4, 12, 24):
        rows = labels.filter(pl.col("horizon") == h)
        assert (rows["ts"] == candles["ts"]).all()
        fwd = rows["fwd_return"].to_numpy().astype(float)
        assert np.isnan(fwd[-h:]).all() and not np.isnan(fwd[:-h]).any()
        assert_close(f"fwd_return h={h}", fwd[:-h], c[h:] / c[:-h] - 1, 0)
        expected_dir = np.where(fwd[:-h] > 0.002, 1, np.where(fwd[:-h] < -0.002, -1, 0))
        assert (rows["direction"].to_numpy()[:-h] == expected_dir).all()
        vol = np.sqrt(np.lib.stride_tricks.sliding_window_view(log_ret[1:] ** 2, h).sum(axis=1))
        assert_close(f"fwd_volatility h={h}", rows["fwd_volatility"].to_numpy().astype(float)[:-h], vol, 0)
