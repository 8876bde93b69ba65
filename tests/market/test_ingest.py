"""Ingest: validation before write, idempotent partitions, nothing half written."""

import datetime as dt

import polars as pl
import pytest

from pipeline.config import Settings
from pipeline.market.base import MarketDataError, SourceUnavailable
from pipeline.market.ingest import build_source, candle_problems, ingest_candles, ingest_funding
from pipeline.market.synthetic import SyntheticSource

NOW = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
SYMBOLS = ("BTCUSDT", "ETHUSDT")


class FlakySource:
    """The synthetic market, with a chosen symbol failing or returning tampered rows."""

    name = "flaky"

    def __init__(self, fail_symbol=None, tamper=None):
        self.inner = SyntheticSource(symbols=SYMBOLS, origin="2025-01-01", now=lambda: NOW)
        self.fail_symbol, self.tamper = fail_symbol, tamper

    def candles(self, symbol, interval, start, end):
        if symbol == self.fail_symbol:
            raise SourceUnavailable(f"HTTP 503 for {symbol} {interval} page {start}..{end}")
        frame = self.inner.candles(symbol, interval, start, end)
        return self.tamper(frame) if self.tamper else frame

    def funding(self, symbol, start, end):
        return self.inner.funding(symbol, start, end)


def day(d: int) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime(2025, 1, d), dt.datetime(2025, 1, d + 1)


def stored(wh) -> pl.DataFrame:
    return wh.query("select * exclude (ingested_at) from raw.candles order by symbol, interval, ts")


def test_partition_rerun_gives_the_same_rows(warehouse):
    src = FlakySource()
    first = ingest_candles(src, warehouse, SYMBOLS, ["60", "240"], *day(2), now=NOW)
    rows = stored(warehouse)
    second = ingest_candles(src, warehouse, SYMBOLS, ["60", "240"], *day(2), now=NOW)
    assert stored(warehouse).equals(rows)
    assert first.rows_written == second.rows_written == second.rows_replaced == 2 * (24 + 6)
    assert first.missing_bars == 0


def test_neighbouring_partitions_are_untouched(warehouse):
    src = FlakySource()
    ingest_candles(src, warehouse, SYMBOLS, ["60"], *day(2), now=NOW)
    ingest_candles(src, warehouse, SYMBOLS, ["60"], *day(3), now=NOW)
    before = stored(warehouse)
    ingest_candles(src, warehouse, SYMBOLS, ["60"], *day(3), now=NOW)
    assert stored(warehouse).equals(before)
    assert before.height == 2 * 48


def test_api_error_mid_range_writes_nothing(warehouse):
    ingest_candles(FlakySource(), warehouse, SYMBOLS, ["60"], *day(2), now=NOW)
    before = stored(warehouse)
    with pytest.raises(SourceUnavailable, match="ETHUSDT"):
        ingest_candles(FlakySource(fail_symbol="ETHUSDT"), warehouse, SYMBOLS, ["60"], *day(2), now=NOW)
    assert stored(warehouse).equals(before)


def test_rows_outside_the_window_are_an_error(warehouse):
    shifted = FlakySource(tamper=lambda f: f.with_columns(ts=pl.col("ts") + dt.timedelta(days=1)))
    with pytest.raises(MarketDataError, match="outside"):
        ingest_candles(shifted, warehouse, SYMBOLS, ["60"], *day(2), now=NOW)
    assert stored(warehouse).height == 0


def test_missing_bars_are_counted_not_filled(warehouse):
    holes = FlakySource(tamper=lambda f: f.filter(~pl.col("ts").dt.hour().is_in([3, 4])))
    report = ingest_candles(holes, warehouse, SYMBOLS, ["60"], *day(2), now=NOW)
    assert report.missing_bars == 4
    assert stored(warehouse).height == 2 * 22


def test_candle_problems_is_empty_on_good_data():
    frame = FlakySource().candles("BTCUSDT", "60", *day(2))
    assert candle_problems(frame) == []


def test_funding_ingest_is_idempotent(warehouse):
    src = FlakySource()
    ingest_funding(src, warehouse, SYMBOLS, *day(2))
    ingest_funding(src, warehouse, SYMBOLS, *day(2))
    rows = warehouse.query("select symbol, ts, funding_rate from raw.funding order by 1, 2")
    assert rows.height == 2 * 3 and rows["ts"].dt.hour().to_list()[:3] == [0, 8, 16]


def test_settings_choose_the_source(tmp_path):
    assert build_source(Settings(data_dir=tmp_path)).name == "synthetic"
    with pytest.raises(ValueError, match="CONVTRADE_SOURCE"):
        Settings(source="ftp")
