"""features_for_window (what the dbt Python model returns on a windowed run) equals a full build's rows."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipeline.features.candle_features import compute_candle_features, features_for_window


def test_window_rows_equal_full_build_and_idle_series_are_skipped(helpers, compare):
    start = dt.datetime(2024, 3, 1)
    btc = helpers["random_walk"]("BTCUSDT", start, 24 * 20, "60", seed=3)
    eth = helpers["random_walk"]("ETHUSDT", start, 24 * 15, "60", seed=4)  # ends before the window
    candles = pl.concat([btc, eth])
    lo, hi = start + dt.timedelta(days=18), start + dt.timedelta(days=19)
    window = features_for_window(candles, lo.strftime("%Y-%m-%d %H:%M:%S"), hi)
    full = compute_candle_features(candles)
    expected = full.filter(pl.col("ts").is_between(lo, hi, closed="left"))
    assert expected["symbol"].unique().to_list() == ["BTCUSDT"] and expected.height == 24
    compare(window, expected, "window vs full build")
    compare(features_for_window(candles), full, "no window = full build")
    open_end = features_for_window(candles, start=lo)
    compare(open_end, full.filter(pl.col("ts") >= lo), "open-ended window")
    empty = features_for_window(candles, "2030-01-01 00:00:00", "2030-01-02 00:00:00")
    assert empty.height == 0 and empty.columns == full.columns


def test_bad_window_bound_is_named(helpers):
    candles = helpers["random_walk"]("BTCUSDT", dt.datetime(2024, 3, 1), 48, "60", seed=5)
    with pytest.raises(ValueError, match="'yesterday'"):
        features_for_window(candles, "yesterday", None)
