"""Leakage: changing or appending candles after t moves no feature at or before t
and no label whose horizon ends at or before t."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipeline.features.candle_features import compute_candle_features
from pipeline.features.labels import label_spec
from pipeline.dbt_runner.invoke import run_dbt


def change_after(candles: pl.DataFrame, t: dt.datetime, extra: pl.DataFrame) -> pl.DataFrame:
    """Candles after t scaled (prices x1.07, volume x3) and ``extra`` appended."""
    after = pl.col("ts") > t
    scaled = candles.with_columns(
        [pl.when(after).then(pl.col(c) * 1.07).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close", "turnover")]
        + [pl.when(after).then(pl.col("volume") * 3).otherwise(pl.col("volume")).alias("volume")]
    )
    return pl.concat([scaled, extra]).sort("symbol", "interval", "ts")


def _extra(candles: pl.DataFrame, helpers, days: int) -> pl.DataFrame:
    parts = []
    for (symbol,), series in candles.group_by(["symbol"], maintain_order=True):
        last = series["ts"].max()
        walk = helpers["random_walk"](symbol, last + dt.timedelta(hours=1), 24 * days, "60", seed=len(symbol))
        scale = series["close"][-1] / 100.0
        parts.append(walk.with_columns([pl.col(c) * scale for c in ("open", "high", "low", "close", "turnover")]))
    return pl.concat(parts)


@pytest.fixture(scope="module")
def two_symbols(real_candles):
    start = dt.datetime(2025, 9, 20)
    return pl.concat(
        [real_candles(s, "60").filter(pl.col("ts") >= start) for s in ("BTCUSDT", "ETHUSDT")]
    )


def test_dbt_tables_do_not_leak(two_symbols, helpers, compare, tmp_path):
    t = dt.datetime(2025, 11, 20, 13, 0)  # mid 4h bucket and mid day: partial coarse bars at t
    changed = change_after(two_symbols, t, _extra(two_symbols, helpers, 3))
    before = helpers["load_candles"](tmp_path / "before.duckdb", two_symbols)
    after = helpers["load_candles"](tmp_path / "after.duckdb", changed)
    for warehouse in (before, after):
        run_dbt(["run"], warehouse.path)

    def features(wh, where):
        return wh.query(f"select * from features.candle_features where {where} order by symbol, interval, ts")

    upto = f"ts <= '{t}'"
    compare(features(before, upto), features(after, upto), "features at or before t", rtol=0.0)
    next_day = f"ts > '{t}' and ts <= '{t + dt.timedelta(days=1)}'"
    moved = features(before, next_day)["rsi_14"] != features(after, next_day)["rsi_14"]
    assert moved.all(), "the change after t must reach features after t (else the test proves nothing)"

    for horizon in label_spec().horizons:
        known = f"horizon = {horizon} and ts + interval {horizon} hour <= '{t}'"
        query = "select * from features.labels where {} order by symbol, interval, ts"
        compare(before.query(query.format(known)), after.query(query.format(known)), f"labels h={horizon} ending by t")
        edge = f"horizon = {horizon} and ts <= '{t}' and ts + interval {horizon} hour > '{t}'"
        a, b = before.query(query.format(edge)), after.query(query.format(edge))
        assert a.height == b.height > 0
        assert (a["fwd_return"] != b["fwd_return"]).all(), f"labels h={horizon} whose horizon crosses t must move"


@pytest.mark.parametrize("interval", ["1", "60"])
def test_compute_candle_features_is_causal_at_many_cut_points(helpers, compare, interval):
    """Pure function check on 1m bars (15m/1h coarse) and 1h bars (4h/1d coarse)."""
    bars = 3000 if interval == "1" else 1500
    candles = helpers["random_walk"]("AAAUSDT", dt.datetime(2024, 1, 1), bars, interval, seed=3)
    full = compute_candle_features(candles)
    for cut in (bars // 3 + 7, bars // 2 + 1, bars - 45):
        t = candles["ts"][cut]
        changed = change_after(candles, t, candles.head(0))
        again = compute_candle_features(changed)
        compare(
            full.filter(pl.col("ts") <= t), again.filter(pl.col("ts") <= t), f"{interval} cut at {t}", rtol=0.0
        )
        assert not full.filter(pl.col("ts") > t)["htf1_log_ret"].equals(again.filter(pl.col("ts") > t)["htf1_log_ret"])
