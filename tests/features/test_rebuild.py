"""Reproducible bytes: rebuilding partitions (alone, inside a backfill) leaves every table bit-identical to a
clean full build, and no incremental run leaves a ``__dbt_tmp`` relation behind."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import numpy as np
import polars as pl
import pytest

from pipeline.dbt_runner.invoke import run_dbt
from pipeline.warehouse import Warehouse

DAY = dt.timedelta(days=1)
GAPS = ("fill", 3)  # the fill path: its runs also rewrite the bars before the window (replace_source_keys)
TABLES = ("features.candle_features", "features.labels")


@pytest.fixture(scope="module")
def candles(real_candles):
    """BTC and ETH 1h from 2025-08-01, a 2-bar BTC gap across midnight 2025-11-10 (filled) and a 30-bar ETH gap."""
    frame = pl.concat(
        [real_candles(s, "60").filter(pl.col("ts") >= dt.datetime(2025, 8, 1)) for s in ("BTCUSDT", "ETHUSDT")]
    )
    btc = (pl.col("symbol") == "BTCUSDT") & pl.col("ts").is_between(dt.datetime(2025, 11, 9, 23), dt.datetime(2025, 11, 10))
    eth = (pl.col("symbol") == "ETHUSDT") & pl.col("ts").is_between(dt.datetime(2025, 11, 9, 3), dt.datetime(2025, 11, 10, 8))
    return frame.filter(~btc & ~eth)


def dbt_tmp_relations(path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("select table_schema || '.' || table_name from information_schema.tables "
                       "where table_name like '%dbt_tmp%'").fetchall()
    return [r[0] for r in rows]


def test_partition_rebuilds_are_bit_identical_and_leave_no_temp_tables(candles, helpers, tmp_path):
    clean = helpers["load_candles"](tmp_path / "clean.duckdb", candles)
    run_dbt(["run"], clean.path, gaps=GAPS)
    rebuilt_path = tmp_path / "rebuilt.duckdb"
    shutil.copy(clean.path, rebuilt_path)

    day = dt.datetime(2025, 11, 10)
    month = (day.replace(day=1), dt.datetime(2025, 12, 1))
    run_dbt(["build"], rebuilt_path, *month, gaps=GAPS)  # one monthly partition alone, as the daily refresh runs it
    run_dbt(["run", "--select", "candle_features", "labels"], rebuilt_path, day, day + DAY, gaps=GAPS)  # any window
    run_dbt(["run", "--select", "candle_features", "labels"], rebuilt_path, day - DAY, day + 2 * DAY, gaps=GAPS)  # backfill
    last = candles["ts"].max().replace(hour=0)
    run_dbt(["run", "--select", "candle_features", "labels"], rebuilt_path, last, last + DAY, gaps=GAPS)  # the newest day
    run_dbt(["run", "--select", "candle_features", "labels"], clean.path, gaps=GAPS)  # a windowless run on a built table

    for path in (rebuilt_path, clean.path):
        assert dbt_tmp_relations(path) == [], f"{path.name}: temporary relations left behind"

    with duckdb.connect(str(rebuilt_path), read_only=True) as con:
        con.execute(f"attach '{clean.path}' as clean (read_only)")
        for table in TABLES:
            for a, b in ((table, f"clean.{table}"), (f"clean.{table}", table)):
                extra = con.execute(f"select count(*) from (select * from {a} except all select * from {b})").fetchone()[0]
                assert extra == 0, f"{table}: {extra} rows of {a} are not in {b}"
    # EXCEPT ALL compares values; the bytes too (0.0 vs -0.0, NaN payloads)
    for table in TABLES:
        left, right = helpers["table"](clean, table), helpers["table"](Warehouse(rebuilt_path), table)
        assert left.height == right.height
        for name in left.columns:
            if left[name].dtype.is_float():
                a = left[name].fill_null(0.0).to_numpy().view(np.int64)
                b = right[name].fill_null(0.0).to_numpy().view(np.int64)
                assert (a == b).all() and left[name].is_null().equals(right[name].is_null()), f"{table}.{name}"
    # the rebuilt partitions hold filled bars (so the fill path was exercised)
    assert clean.query("select count(*) as n from features.candle_features where is_filled")["n"][0] == 2
