"""The warehouse: idempotent replaces, crash safety, lock handling."""

import datetime as dt
import subprocess
import sys
import textwrap

import polars as pl
import pytest

from pipeline.market.schemas import CANDLE_SCHEMA
from pipeline.warehouse import Warehouse, WarehouseLocked


def candles(symbol: str, day: dt.date, n: int = 24, price: float = 100.0) -> pl.DataFrame:
    start = dt.datetime(day.year, day.month, day.day)
    return pl.DataFrame(
        {
            "symbol": symbol,
            "interval": "60",
            "ts": [start + dt.timedelta(hours=i) for i in range(n)],
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price,
            "volume": 1.0,
            "turnover": None,
            "source": "test",
        },
        schema=CANDLE_SCHEMA,
    )


def replace_day(wh: Warehouse, frame: pl.DataFrame, day: dt.date) -> int:
    start = dt.datetime(day.year, day.month, day.day)
    return wh.replace_rows("raw.candles", frame, "ts >= ? and ts < ?", [start, start + dt.timedelta(days=1)])


def snapshot(wh: Warehouse) -> pl.DataFrame:
    return wh.query("select * exclude (ingested_at) from raw.candles order by symbol, ts")


def test_replace_is_idempotent_and_touches_only_its_rows(warehouse):
    d1, d2 = dt.date(2025, 1, 1), dt.date(2025, 1, 2)
    replace_day(warehouse, candles("BTCUSDT", d1), d1)
    replace_day(warehouse, candles("BTCUSDT", d2), d2)
    first = snapshot(warehouse)
    assert replace_day(warehouse, candles("BTCUSDT", d2), d2) == 24
    assert snapshot(warehouse).equals(first)
    # a corrected day replaces exactly that day
    replace_day(warehouse, candles("BTCUSDT", d2, price=200.0), d2)
    after = snapshot(warehouse)
    assert after.filter(pl.col("ts").dt.date() == d1).equals(first.filter(pl.col("ts").dt.date() == d1))
    assert (after.filter(pl.col("ts").dt.date() == d2)["close"] == 200.0).all()
    assert after.height == 48


def test_failed_write_keeps_the_old_rows(warehouse):
    day = dt.date(2025, 1, 1)
    replace_day(warehouse, candles("BTCUSDT", day), day)
    before = snapshot(warehouse)
    bad = pl.concat([candles("BTCUSDT", day, price=300.0), candles("BTCUSDT", day, n=1, price=300.0)])
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        replace_day(warehouse, bad, day)  # the delete ran, then the insert failed half way
    assert snapshot(warehouse).equals(before)


def test_unknown_table_is_rejected(warehouse):
    with pytest.raises(KeyError, match="raw.nope"):
        warehouse.replace_rows("raw.nope", candles("X", dt.date(2025, 1, 1)), "true")


def test_read_only_on_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="make demo"):
        Warehouse(tmp_path / "none.duckdb").query("select 1")


def test_lock_held_by_another_process_times_out_clearly(warehouse):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys, time
                con = duckdb.connect({str(warehouse.path)!r})
                print("locked", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WarehouseLocked, match="locked by another process"):
            Warehouse(warehouse.path, lock_timeout_s=0.5).query("select 1")
    finally:
        holder.communicate("\n", timeout=30)
    assert Warehouse(warehouse.path).query("select 1 as x")["x"][0] == 1


def test_replace_tables_is_one_transaction(warehouse):
    """A failure after the first of several tables leaves every table as it was."""
    from pipeline.warehouse import Replacement

    day = dt.date(2025, 1, 1)
    replace_day(warehouse, candles("BTCUSDT", day), day)
    funding = pl.DataFrame({"symbol": ["BTCUSDT"], "ts": [dt.datetime(2025, 1, 1)], "funding_rate": [0.0001],
                            "source": ["test"]})
    warehouse.replace_rows("raw.funding", funding, "true")
    before = (snapshot(warehouse), warehouse.query("select * exclude (ingested_at) from raw.funding"))
    writes = [Replacement("raw.candles", candles("BTCUSDT", day, price=200.0), "true"),
              Replacement("raw.funding", funding.with_columns(pl.lit(0.5).alias("funding_rate")), "true")]

    def fail_after(table):
        if table == "raw.candles":
            raise RuntimeError("killed between two tables")

    warehouse._after_write = fail_after
    with pytest.raises(RuntimeError, match="between two tables"):
        warehouse.replace_tables(writes)
    warehouse._after_write = None
    assert snapshot(warehouse).equals(before[0])
    assert warehouse.query("select * exclude (ingested_at) from raw.funding").equals(before[1])
    assert warehouse.replace_tables(writes) == {"raw.candles": 24, "raw.funding": 1}
    assert (snapshot(warehouse)["close"] == 200.0).all()
