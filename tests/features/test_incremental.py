"""Incremental runs (daily windows, a multi-day backfill, a rerun) give exactly the full rebuild."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipeline.features.dbt_cli import run_dbt

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def candles(real_candles):
    """BTC and ETH 1h from 2025-09-25 to the end of the files (2025-12-05 22:00), with a
    6-bar ETH gap on 2025-12-02 so gap handling is part of the comparison."""
    frame = pl.concat(
        [real_candles(s, "60").filter(pl.col("ts") >= dt.datetime(2025, 9, 25)) for s in ("BTCUSDT", "ETHUSDT")]
    )
    gap = (pl.col("symbol") == "ETHUSDT") & pl.col("ts").is_between(
        dt.datetime(2025, 12, 2, 5), dt.datetime(2025, 12, 2, 10)
    )
    return frame.filter(~gap)


def test_daily_and_backfill_runs_equal_full_rebuild(candles, helpers, compare, tmp_path):
    full = helpers["load_candles"](tmp_path / "full.duckdb", candles)
    run_dbt(["run"], full.path)

    first_day = dt.datetime(2025, 12, 1)
    inc = helpers["load_candles"](tmp_path / "incremental.duckdb", candles.filter(pl.col("ts") < first_day))
    run_dbt(["run"], inc.path)
    windows = [
        (first_day, first_day + DAY),
        (first_day + DAY, first_day + 2 * DAY),
        (first_day + DAY, first_day + 2 * DAY),  # a rerun replaces exactly its rows
        (first_day + 2 * DAY, first_day + 5 * DAY),  # a three-day backfill in one run
    ]
    for start, end in windows:
        day = candles.filter(pl.col("ts").is_between(start, end, closed="left"))
        inc.replace_rows("raw.candles", day, "ts >= ? and ts < ?", [start, end])
        run_dbt(["run", "--select", "candle_features", "labels"], inc.path, start, end)
        # after each window, everything before its end equals a rebuild on the same candles
        expected = candles.filter(pl.col("ts") < end)
        assert inc.query("select count(*) as n from features.candle_features")["n"][0] == expected.height

    for name in ("features.candle_features", "features.labels"):
        compare(helpers["table"](inc, name), helpers["table"](full, name), f"{name}: incremental vs full")

    gap_rows = helpers["table"](full, "features.candle_features").filter(pl.col("is_after_gap"))
    assert gap_rows.select("symbol", "ts").rows() == [("ETHUSDT", dt.datetime(2025, 12, 2, 11))]
    labels = helpers["table"](full, "features.labels")
    across_gap = labels.filter(
        (pl.col("symbol") == "ETHUSDT") & (pl.col("ts") == dt.datetime(2025, 12, 2, 4)) & (pl.col("horizon") == 1)
    )
    assert across_gap["fwd_return"].is_null().all(), "a label whose horizon spans missing bars stays NULL"
