"""Incremental runs (daily windows, a multi-day backfill, a rerun) give exactly the full rebuild, bit for bit,
under both gap policies, with gaps inside a day and across a partition boundary."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipeline.features.candle_features import compute_candle_features
from pipeline.dbt_runner.invoke import run_dbt

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def candles(real_candles):
    """BTC and ETH 1h from 2025-09-25 to the end of the files (2025-12-05 22:00), with a
    6-bar ETH gap on 2025-12-02 and a 3-bar BTC gap across midnight 2025-12-02/03 (a
    partition boundary), so gap handling is part of the comparison."""
    frame = pl.concat(
        [real_candles(s, "60").filter(pl.col("ts") >= dt.datetime(2025, 9, 25)) for s in ("BTCUSDT", "ETHUSDT")]
    )
    eth_gap = (pl.col("symbol") == "ETHUSDT") & pl.col("ts").is_between(
        dt.datetime(2025, 12, 2, 5), dt.datetime(2025, 12, 2, 10)
    )
    btc_gap = (pl.col("symbol") == "BTCUSDT") & pl.col("ts").is_between(
        dt.datetime(2025, 12, 2, 23), dt.datetime(2025, 12, 3, 1)
    )
    return frame.filter(~eth_gap & ~btc_gap)


# fill/3: the BTC gap across midnight is filled (two of its bars lie in the next day's partition, all three
# are written once the candle of 02:00 arrives), the 6-bar ETH gap stays a gap
@pytest.mark.parametrize("gaps", [("segment", 0), ("fill", 3)], ids=["segment", "fill"])
def test_daily_and_backfill_runs_equal_full_rebuild(candles, helpers, compare, tmp_path, gaps):
    full = helpers["load_candles"](tmp_path / "full.duckdb", candles)
    run_dbt(["run"], full.path, gaps=gaps)

    first_day = dt.datetime(2025, 12, 1)
    inc = helpers["load_candles"](tmp_path / "incremental.duckdb", candles.filter(pl.col("ts") < first_day))
    run_dbt(["run"], inc.path, gaps=gaps)
    windows = [
        (first_day, first_day + DAY),
        (first_day + DAY, first_day + 2 * DAY),
        (first_day + DAY, first_day + 2 * DAY),  # a rerun replaces exactly its rows
        (first_day + 2 * DAY, first_day + 5 * DAY),  # a three-day backfill in one run
    ]
    for start, end in windows:
        day = candles.filter(pl.col("ts").is_between(start, end, closed="left"))
        inc.replace_rows("raw.candles", day, "ts >= ? and ts < ?", [start, end])
        run_dbt(["run", "--select", "candle_features", "labels"], inc.path, start, end, gaps=gaps)
        # after each window, the table holds the rows of a rebuild on the same candles (under fill, the
        # bars of a gap are filled once the candle after it has arrived)
        expected = compute_candle_features(candles.filter(pl.col("ts") < end), gap_policy=gaps[0], max_fill_bars=gaps[1])
        assert inc.query("select count(*) as n from features.candle_features")["n"][0] == expected.height

    for name in ("features.candle_features", "features.labels"):
        compare(helpers["table"](inc, name), helpers["table"](full, name), f"{name}: incremental vs full", rtol=0.0)

    features = helpers["table"](full, "features.candle_features")
    filled = features.filter(pl.col("is_filled"))
    if gaps[0] == "fill":
        assert filled["ts"].to_list() == [dt.datetime(2025, 12, 2, 23), dt.datetime(2025, 12, 3), dt.datetime(2025, 12, 3, 1)]
        assert (filled["symbol"] == "BTCUSDT").all()
    else:
        assert filled.is_empty()
    gap_rows = features.filter(pl.col("is_after_gap"))
    assert gap_rows.select("symbol", "ts").rows() == [
        ("BTCUSDT", dt.datetime(2025, 12, 3, 2)), ("ETHUSDT", dt.datetime(2025, 12, 2, 11))
    ]
    restarted = features.filter(pl.col("is_after_gap") & ~pl.col("ret_1").is_null())
    assert restarted.select("symbol").to_series().to_list() == (["BTCUSDT"] if gaps[0] == "fill" else [])
    labels = helpers["table"](full, "features.labels")
    across_gap = labels.filter(
        (pl.col("symbol") == "ETHUSDT") & (pl.col("ts") == dt.datetime(2025, 12, 2, 4)) & (pl.col("horizon") == 1)
    )
    assert across_gap["fwd_return"].is_null().all(), "a label whose horizon spans missing bars stays NULL"
    # filled bars are not candles: no label row
    assert labels.join(filled.select("symbol", "interval", "ts"), on=["symbol", "interval", "ts"]).is_empty()
