"""Coverage you can see, and nothing lost: short exports never erase stored candles, missing bars are
counted only inside a series' span, empty past days are reported once, absent datasets skip at once."""

import datetime as dt
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline.market.base import MarketDataError
from pipeline.market.files import FileSource
from pipeline.market.ingest import ingest_candles, ingest_funding, ingest_open_interest, ingest_orderbook
from pipeline.market.synthetic import SyntheticSource

START, END = dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 4)  # three days, 72 hourly bars
NOW = dt.datetime(2025, 2, 1)
HOUR_MS = 3_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def hours(first: dt.datetime = START, count: int = 72) -> list[int]:
    ms = int(first.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    return [ms + h * HOUR_MS for h in range(count)]


def write_export(folder: Path, symbol: str, stamps: list[int]) -> Path:
    """A candle export in the layout of ../shared/data (header, ts in ms), one row per stamp."""
    lines = ["ts,open,high,low,close,volume"]
    for i, ms in enumerate(stamps):
        price = 100.0 + (ms // HOUR_MS) % 97 * 0.25
        lines.append(f"{ms},{price},{price + 1.5},{price - 1.0},{price + 0.5},{1 + i % 5}")
    path = folder / f"bybit_{symbol}_60.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def stored(wh) -> pl.DataFrame:
    """Every stored candle, every column (ingested_at too: a rewrite of the same values would show)."""
    return wh.query("select * from raw.candles order by symbol, interval, ts")


@pytest.fixture
def exports(tmp_path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    for symbol in SYMBOLS:
        write_export(folder, symbol, hours())
    return folder


@pytest.fixture
def loaded(exports, warehouse):
    """Three days of both symbols stored from complete exports."""
    report = ingest_candles(FileSource(exports), warehouse, SYMBOLS, ["60"], START, END, now=NOW)
    assert report.rows_written == 2 * 72 and report.missing_bars == 0
    return stored(warehouse)


def refused(exports, warehouse, before, symbol: str, **kw) -> str:
    with pytest.raises(MarketDataError) as info:
        ingest_candles(FileSource(exports), warehouse, SYMBOLS, ["60"], START, END, now=NOW, **kw)
    assert stored(warehouse).equals(before)  # byte for byte, ingested_at included
    message = str(info.value)
    assert symbol in message and " 60 " in message and f"[{START}, {END})" in message, message
    assert "nothing written" in message and "allow_shrink" in message
    return message


def test_export_with_only_its_header_erases_nothing(exports, warehouse, loaded):
    (exports / "bybit_BTCUSDT_60.csv").write_text("ts,open,high,low,close,volume\n")
    message = refused(exports, warehouse, loaded, "BTCUSDT")
    assert "returned 0 candle(s) and lacks 72" in message
    assert "ETHUSDT" not in message  # the complete symbol is not blamed


def test_export_cut_short_erases_nothing(exports, warehouse, loaded):
    write_export(exports, "ETHUSDT", hours()[:50])
    message = refused(exports, warehouse, loaded, "ETHUSDT")
    assert "returned 50 candle(s) and lacks 22" in message
    assert "first 2025-01-03 02:00:00" in message and "last 2025-01-03 23:00:00" in message


def test_source_missing_one_symbol_erases_nothing(exports, warehouse, loaded):
    class WithoutEth(FileSource):
        def candles(self, symbol, interval, start, end):
            frame = super().candles(symbol, interval, start, end)
            return frame.clear() if symbol == "ETHUSDT" else frame

    with pytest.raises(MarketDataError, match=r"ETHUSDT 60 \[2025-01-01 00:00:00, 2025-01-04 00:00:00\)"):
        ingest_candles(WithoutEth(exports), warehouse, SYMBOLS, ["60"], START, END, now=NOW)
    assert stored(warehouse).equals(loaded)


def test_export_missing_a_symbols_file_erases_nothing(exports, warehouse, loaded):
    (exports / "bybit_ETHUSDT_60.csv").unlink()
    with pytest.raises(MarketDataError, match="candles of ETHUSDT interval 60"):
        ingest_candles(FileSource(exports), warehouse, SYMBOLS, ["60"], START, END, now=NOW)
    assert stored(warehouse).equals(loaded)


def test_explicit_allow_shrink_replaces_and_counts_every_bar_missing(exports, warehouse, loaded):
    (exports / "bybit_BTCUSDT_60.csv").write_text("ts,open,high,low,close,volume\n")
    report = ingest_candles(FileSource(exports), warehouse, SYMBOLS, ["60"], START, END, now=NOW, allow_shrink=True)
    after = stored(warehouse)
    assert after.filter(pl.col("symbol") == "BTCUSDT").height == 0
    assert after.filter(pl.col("symbol") == "ETHUSDT").drop("ingested_at").equals(
        loaded.filter(pl.col("symbol") == "ETHUSDT").drop("ingested_at")
    )
    btc = next(s for s in report.per_series if s["symbol"] == "BTCUSDT")
    assert (btc["rows"], btc["missing_bars"]) == (0, 72)
    assert report.missing_bars == 72
    assert report.empty_ranges == [
        {"symbol": "BTCUSDT", "interval": "60", "start": "2025-01-01", "end": "2025-01-04", "days": 3}
    ]


def test_configured_series_with_no_rows_counts_every_closed_bar(exports, warehouse):
    (exports / "bybit_BTCUSDT_60.csv").write_text("ts,open,high,low,close,volume\n")
    # "now" mid-way through the last day: only its closed bars are owed.
    now = dt.datetime(2025, 1, 3, 10, 30)
    report = ingest_candles(FileSource(exports), warehouse, SYMBOLS, ["60"], START, END, now=now)
    btc = next(s for s in report.per_series if s["symbol"] == "BTCUSDT")
    assert (btc["rows"], btc["missing_bars"], btc["gaps"]) == (0, 48 + 10, 1)
    eth = next(s for s in report.per_series if s["symbol"] == "ETHUSDT")
    # ETH is complete up to the last bar closed by "now" (the export holds later ones: not owed yet).
    assert eth["missing_bars"] == 0


def test_missing_bars_only_between_first_and_last_candle():
    """A market that opens late and an export that ends early leave no missing bars at the window edges;
    a single hole and a run of 11 inside count 12 bars in 2 gaps. Checked against an independent count."""
    import tempfile

    stamps = hours(count=72)
    kept = stamps[5:60]  # opens at 05:00 on day 1, ends at 11:00 on day 3
    holes = {kept[10]} | set(kept[20:31])
    kept = [ms for ms in kept if ms not in holes]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_export(folder, "BTCUSDT", kept)
        from pipeline.warehouse import Warehouse

        wh = Warehouse(folder / "w.duckdb")
        wh.ensure_schema()
        report = ingest_candles(FileSource(folder), wh, ["BTCUSDT"], ["60"], START, END, now=NOW)
    [series] = report.per_series
    present = sorted(kept)
    independent = sum((b - a) // HOUR_MS - 1 for a, b in zip(present, present[1:]))
    assert independent == 12
    assert (series["missing_bars"], series["gaps"], series["rows"]) == (12, 2, len(kept))
    assert report.empty_ranges == []  # every day has candles


def test_past_days_without_candles_are_one_range_per_series(exports, warehouse):
    write_export(exports, "ETHUSDT", hours()[:30])  # ETH stops at 05:00 on day 2
    end = dt.datetime(2025, 1, 8)
    report = ingest_candles(FileSource(exports), warehouse, SYMBOLS, ["60"], START, end, now=NOW)
    assert report.empty_ranges == [
        {"symbol": "BTCUSDT", "interval": "60", "start": "2025-01-04", "end": "2025-01-08", "days": 4},
        {"symbol": "ETHUSDT", "interval": "60", "start": "2025-01-03", "end": "2025-01-08", "days": 5},
    ]
    # The days after an export ends are reported as empty, not as missing bars.
    assert report.missing_bars == 0


def test_days_not_over_yet_are_not_empty(exports, warehouse):
    report = ingest_candles(
        FileSource(exports), warehouse, SYMBOLS, ["60"], START, dt.datetime(2025, 1, 6), now=dt.datetime(2025, 1, 5, 3)
    )
    assert [(r["symbol"], r["start"], r["end"]) for r in report.empty_ranges] == [
        ("BTCUSDT", "2025-01-04", "2025-01-05"),
        ("ETHUSDT", "2025-01-04", "2025-01-05"),
    ]


class CountingFiles(FileSource):
    """The files source, counting what it is asked to fetch."""

    def __init__(self, folder):
        super().__init__(folder)
        self.fetches = 0

    def funding(self, *a, **k):
        self.fetches += 1
        return super().funding(*a, **k)

    def open_interest(self, *a, **k):
        self.fetches += 1
        return super().open_interest(*a, **k)

    def orderbook(self, *a, **k):
        self.fetches += 1
        return super().orderbook(*a, **k)


def test_datasets_the_files_source_lacks_are_skipped_at_once(exports, warehouse):
    source = CountingFiles(exports)
    start, end = dt.datetime(2020, 3, 25), dt.datetime(2026, 1, 1)  # years of days: nothing per day
    t0 = time.perf_counter()
    reports = [
        ingest_funding(source, warehouse, SYMBOLS, start, end),
        ingest_open_interest(source, warehouse, SYMBOLS, ["60"], start, end),
        ingest_orderbook(source, warehouse, SYMBOLS, start, end),
    ]
    elapsed = time.perf_counter() - t0
    assert source.fetches == 0
    for report in reports:
        assert report.rows_written == report.rows_replaced == 0
        assert len(report.skipped) == 2 and all(str(exports) in why for why in report.skipped)
    assert "BTCUSDT: no funding file" in reports[0].skipped[0]
    assert elapsed < 5  # generous on a loaded machine: the skip reads no file at all (bench/history.py times it)


def test_skipping_one_symbol_keeps_its_stored_rows(exports, warehouse, shared_data):
    """BTC has a funding file, SOL has none: SOL is skipped (its stored funding untouched), BTC ingested."""
    import shutil

    shutil.copy(shared_data / "bybit_BTCUSDT_funding.csv.gz", exports)
    day = (dt.datetime(2023, 6, 1), dt.datetime(2023, 6, 2))  # inside the BTC funding file
    synthetic = SyntheticSource(symbols=("SOLUSDT",), origin="2023-06-01", now=lambda: dt.datetime(2023, 7, 1))
    ingest_funding(synthetic, warehouse, ["SOLUSDT"], *day)
    sol_before = warehouse.query("select * from raw.funding where symbol = 'SOLUSDT' order by ts")
    assert sol_before.height > 0
    report = ingest_funding(FileSource(exports), warehouse, ["BTCUSDT", "SOLUSDT"], *day)
    assert [s["symbol"] for s in report.per_series] == ["BTCUSDT"] and report.rows_written == 3
    assert report.skipped and report.skipped[0].startswith("SOLUSDT: no funding file")
    assert warehouse.query("select * from raw.funding where symbol = 'SOLUSDT' order by ts").equals(sol_before)
