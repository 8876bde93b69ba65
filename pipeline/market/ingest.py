"""Market data into the warehouse: fetch from a source, validate, replace the range.

Each ``ingest_*`` call owns the rows of its symbols (and intervals) with ``ts``
in ``[start, end)``: it validates the incoming frame first, then replaces
exactly those rows in one transaction. Bad data raises before anything is
written, so the warehouse keeps what it had.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import polars as pl

from pipeline.config import Settings
from pipeline.market.base import MarketDataError, MarketSource
from pipeline.market.timegrid import grid_offset_expr, grid_offset_ms, interval_ms, to_ms, utc_naive
from pipeline.market.schemas import (
    CANDLE_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    ORDERBOOK_SCHEMA,
    conform,
)
from pipeline.warehouse import Warehouse



def build_source(settings: Settings, now=None) -> MarketSource:
    """The market source the settings name (synthetic by default)."""
    if settings.source == "synthetic":
        from pipeline.market.synthetic import SYNTHETIC_ORIGIN, SyntheticSource

        return SyntheticSource(
            symbols=settings.symbols,
            origin=min(SYNTHETIC_ORIGIN, settings.start_date),
            seed=settings.seed,
            planted_pattern=settings.planted_pattern,
            now=now,
        )
    if settings.source == "files":
        from pipeline.market.files import FileSource

        return FileSource(settings.files_dir)
    from pipeline.market.bybit import BybitSource

    kwargs = {"now": now} if now is not None else {}
    return BybitSource(category=settings.bybit_category, testnet=settings.bybit_testnet, **kwargs)


@dataclasses.dataclass(frozen=True)
class IngestReport:
    table: str
    source: str
    start: dt.datetime
    end: dt.datetime
    rows_written: int
    rows_replaced: int
    per_series: list[dict]  # symbol, interval, rows, first_ts, last_ts, missing_bars

    @property
    def missing_bars(self) -> int:
        return sum(item.get("missing_bars", 0) for item in self.per_series)


def candle_problems(frame: pl.DataFrame, max_examples: int = 5) -> list[str]:
    """Rule violations in a candle frame, each naming the rows (symbol, interval, ts) at fault."""
    problems: list[str] = []

    def report(mask: pl.Expr, what: str) -> None:
        bad = frame.filter(mask)
        if bad.height:
            rows = ", ".join(
                f"{r['symbol']} {r['interval']} {r['ts']}" for r in bad.head(max_examples).iter_rows(named=True)
            )
            problems.append(f"{bad.height} candle(s) with {what}: {rows}")

    price_cols = ["open", "high", "low", "close", "volume"]
    report(pl.any_horizontal([pl.col(c).is_null() | pl.col(c).is_nan() for c in price_cols]), "null/NaN values")
    report(pl.any_horizontal([pl.col(c) <= 0 for c in ["open", "high", "low", "close"]]), "non-positive prices")
    report(pl.col("high") < pl.max_horizontal("open", "close"), "high < max(open, close)")
    report(pl.col("low") > pl.min_horizontal("open", "close"), "low > min(open, close)")
    report(pl.col("volume") < 0, "negative volume")
    report(pl.struct("symbol", "interval", "ts").is_duplicated(), "duplicate (symbol, interval, ts)")
    intervals = frame["interval"].unique().to_list()
    off_grid = grid_offset_expr(intervals) != 0
    for interval in intervals:
        report((pl.col("interval") == interval) & off_grid, f"ts off the {interval} grid")
    return problems


def series_summary(frame: pl.DataFrame, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> list[dict]:
    """Rows, first/last ts and missing closed bars per (symbol, interval) in [start, end)."""
    summary = []
    start_ms, end_ms = to_ms(start), to_ms(min(utc_naive(end), utc_naive(now)))
    for (symbol, interval), part in frame.group_by(["symbol", "interval"], maintain_order=True):
        step = interval_ms(interval)
        offset = grid_offset_ms(interval)
        first_grid = -(-(start_ms - offset) // step) * step + offset
        last_closed_open = end_ms - step  # the last bar that has closed by end/now opens here
        expected = max(0, (last_closed_open - first_grid) // step + 1)
        summary.append(
            {
                "symbol": symbol,
                "interval": interval,
                "rows": part.height,
                "first_ts": str(part["ts"].min()),
                "last_ts": str(part["ts"].max()),
                "missing_bars": int(max(0, expected - part.height)),
            }
        )
    return summary


def _replace(
    warehouse: Warehouse,
    table: str,
    frame: pl.DataFrame,
    symbols: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    intervals: Sequence[str] | None = None,
) -> int:
    where = "list_contains(?, symbol) and ts >= ? and ts < ?"
    params: list = [list(symbols), utc_naive(start), utc_naive(end)]
    if intervals is not None:
        where += " and list_contains(?, interval)"
        params.append(list(intervals))
    return warehouse.replace_rows(table, frame, where, params)


def _outside(frame: pl.DataFrame, start: dt.datetime, end: dt.datetime, what: str) -> None:
    bad = frame.filter((pl.col("ts") < utc_naive(start)) | (pl.col("ts") >= utc_naive(end)))
    if bad.height:
        raise MarketDataError(
            f"{what}: source returned {bad.height} row(s) outside [{start}, {end}), e.g. ts {bad['ts'][0]}"
        )


def ingest_candles(
    source: MarketSource,
    warehouse: Warehouse,
    symbols: Sequence[str],
    intervals: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime | None = None,
) -> IngestReport:
    """Fetch, validate and store closed candles for every (symbol, interval) in [start, end)."""
    now = utc_naive(now or dt.datetime.now(dt.timezone.utc))
    frames = []
    for symbol in symbols:
        for interval in intervals:
            part = conform(source.candles(symbol, interval, start, end), CANDLE_SCHEMA, f"{source.name} candles")
            _outside(part, start, end, f"{source.name} candles {symbol} {interval}")
            frames.append(part)
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=CANDLE_SCHEMA)
    problems = candle_problems(frame)
    if problems:
        raise MarketDataError(
            f"{source.name} candles for [{start}, {end}) rejected, nothing written:\n- " + "\n- ".join(problems)
        )
    replaced = _replace(warehouse, "raw.candles", frame, symbols, start, end, intervals)
    return IngestReport(
        "raw.candles", source.name, start, end, frame.height, replaced, series_summary(frame, start, end, now)
    )


def _ingest_simple(
    table: str,
    schema: dict,
    fetch,
    source: MarketSource,
    warehouse: Warehouse,
    symbols: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    key: Sequence[str],
    intervals: Sequence[str] | None = None,
) -> IngestReport:
    frames = []
    for symbol in symbols:
        for interval in intervals or [None]:
            args = (symbol, interval, start, end) if interval is not None else (symbol, start, end)
            part = conform(fetch(*args), schema, f"{source.name} {table}")
            _outside(part, start, end, f"{source.name} {table} {symbol}")
            frames.append(part)
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    duplicated = frame.filter(pl.struct(list(key)).is_duplicated())
    if duplicated.height:
        raise MarketDataError(
            f"{source.name} {table}: {duplicated.height} duplicate {tuple(key)} rows, e.g. "
            f"{duplicated.head(3).select(key).to_dicts()}; nothing written"
        )
    replaced = _replace(warehouse, table, frame, symbols, start, end, intervals)
    per_series = [
        {"symbol": s, "rows": p.height, "first_ts": str(p["ts"].min()), "last_ts": str(p["ts"].max())}
        for (s,), p in frame.group_by(["symbol"], maintain_order=True)
    ]
    return IngestReport(table, source.name, start, end, frame.height, replaced, per_series)


def ingest_funding(source, warehouse, symbols, start, end) -> IngestReport:
    """Funding settlements in [start, end)."""
    return _ingest_simple(
        "raw.funding", FUNDING_SCHEMA, source.funding, source, warehouse, symbols, start, end, ["symbol", "ts"]
    )


def ingest_open_interest(source, warehouse, symbols, intervals, start, end) -> IngestReport:
    """Open interest at bar times in [start, end)."""
    return _ingest_simple(
        "raw.open_interest",
        OPEN_INTEREST_SCHEMA,
        source.open_interest,
        source,
        warehouse,
        symbols,
        start,
        end,
        ["symbol", "interval", "ts"],
        intervals=intervals,
    )


def ingest_orderbook(source, warehouse, symbols, start, end, levels: int = 5) -> IngestReport:
    """Order-book snapshots with ts in [start, end)."""

    def fetch(symbol, s, e):
        return source.orderbook(symbol, s, e, levels=levels)

    return _ingest_simple(
        "raw.orderbook", ORDERBOOK_SCHEMA, fetch, source, warehouse, symbols, start, end, ["symbol", "ts"]
    )
