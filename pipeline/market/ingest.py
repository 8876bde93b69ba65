"""Market data into the warehouse: fetch from a source, validate, replace the range.

Each ``ingest_*`` call owns the rows of its symbols (and intervals) with ``ts``
in ``[start, end)``: it validates the incoming frame first, then replaces
exactly those rows in one transaction. Bad data raises before anything is
written, so the warehouse keeps what it had.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence

import polars as pl

from pipeline.config import Settings
from pipeline.market.base import MarketDataError, MarketSource
from pipeline.core.timegrid import (
    closed_bars,
    count_gaps,
    empty_day_ranges,
    first_bar_at_or_after,
    from_ms,
    last_closed_bar,
    to_ms,
    utc_naive,
)
from pipeline.market.schemas import (
    CANDLE_KEY,
    CANDLE_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    ORDERBOOK_SCHEMA,
    TS,
    candle_violations,
    conform,
)
from pipeline.warehouse import Warehouse



def build_source(settings: Settings, now=None) -> MarketSource:
    """The market source the settings name (synthetic by default).

    ``now`` (a callable returning an aware UTC datetime) is the source's clock: it returns no bar that
    closes after it. By default the settings' clock (:meth:`Settings.now`: ``CONVTRADE_CLOCK`` when set,
    else the wall clock), so a replay never sees a bar from its future.
    """
    if now is None and settings.clock:
        now = settings.now
    if settings.source == "synthetic":
        from pipeline.config import parse_regime_shift
        from pipeline.market.synthetic import SYNTHETIC_ORIGIN, SyntheticSource

        return SyntheticSource(
            symbols=settings.symbols,
            origin=min(SYNTHETIC_ORIGIN, settings.start_date),
            seed=settings.seed,
            planted_pattern=settings.planted_pattern,
            now=now,
            regime_shift=parse_regime_shift(settings.regime_shift, settings.symbols),
            regime_shift_volatility=settings.regime_shift_volatility,
            regime_shift_drift=settings.regime_shift_drift,
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
    per_series: list[dict]  # symbol, interval, rows, first_ts, last_ts, gaps, missing_bars
    # Whole past days of the window with no candle of a configured series: symbol, interval, start, end, days.
    empty_ranges: list[dict] = dataclasses.field(default_factory=list)
    # Why nothing (or not every symbol) was fetched: the source has no such data.
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def missing_bars(self) -> int:
        return sum(item.get("missing_bars", 0) for item in self.per_series)


def candle_problems(frame: pl.DataFrame, max_examples: int = 5) -> list[str]:
    """The candle rules ``frame`` breaks, each naming the rows (symbol, interval, ts) at fault."""
    problems = []
    for rule, bad in candle_violations(frame):
        rows = ", ".join(
            f"{r['symbol']} {r['interval']} {r['ts']}" for r in bad.head(max_examples).iter_rows(named=True)
        )
        problems.append(f"{bad.height} candle(s) break the rule {rule}: {rows}")
    return problems


def stored_bounds(warehouse: Warehouse, symbols: Sequence[str], intervals: Sequence[str]) -> dict:
    """First and last stored candle of each (symbol, interval) in raw.candles."""
    if not warehouse.table_exists("raw.candles"):
        return {}
    rows = warehouse.query(
        "select symbol, interval, min(ts) as lo, max(ts) as hi from raw.candles "
        "where list_contains(?, symbol) and list_contains(?, interval) group by all",
        [list(symbols), list(intervals)],
    )
    return {(r["symbol"], r["interval"]): (r["lo"], r["hi"]) for r in rows.iter_rows(named=True)}


def series_summary(
    frame: pl.DataFrame,
    series: Sequence[tuple[str, str]],
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    bounds: dict | None = None,
) -> list[dict]:
    """Rows, first/last ts, gaps and missing bars of every configured (symbol, interval) in [start, end).

    Missing bars are counted only between the series' first and last stored candle (``bounds``, e.g.
    :func:`stored_bounds`; the frame's own first and last when absent): the span before a market opened
    or after an export ends is no gap. A configured series with no candle in the window counts every
    closed bar of the window as missing. The candle check reports the same numbers from the same call.
    """
    spans = {}
    for symbol, interval in series:
        part = frame.filter((pl.col("symbol") == symbol) & (pl.col("interval") == interval))
        if part.height == 0:
            continue
        lo, hi = (bounds or {}).get((symbol, interval), (part["ts"].min(), part["ts"].max()))
        first_bar = from_ms(first_bar_at_or_after(to_ms(start), interval))
        last_bar = last_closed_bar(start, end, interval, now) or part["ts"].max()
        spans[(symbol, interval)] = (max(utc_naive(lo), first_bar), min(utc_naive(hi), last_bar))
    gaps = {(r["symbol"], r["interval"]): r for r in count_gaps(frame, spans).iter_rows(named=True)}
    summary = []
    for symbol, interval in series:
        row = gaps.get((symbol, interval))
        if row is None:
            missing = closed_bars(start, end, interval, now)
            row = {"bars": 0, "gaps": int(missing > 0), "missing_bars": missing, "first_ts": None, "last_ts": None}
        summary.append(
            {
                "symbol": symbol,
                "interval": interval,
                "rows": row["bars"],
                "first_ts": str(row["first_ts"]) if row["first_ts"] is not None else "",
                "last_ts": str(row["last_ts"]) if row["last_ts"] is not None else "",
                "gaps": row["gaps"],
                "missing_bars": row["missing_bars"],
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


def _lost_candles(
    warehouse: Warehouse, frame: pl.DataFrame, symbols, intervals, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """Stored candles of the window that ``frame`` does not have: what a replace would delete for good."""
    if not warehouse.table_exists("raw.candles"):
        return pl.DataFrame(schema={"symbol": pl.String, "interval": pl.String, "ts": TS})
    stored = warehouse.query(
        "select symbol, interval, ts from raw.candles where list_contains(?, symbol) "
        "and list_contains(?, interval) and ts >= ? and ts < ?",
        [list(symbols), list(intervals), utc_naive(start), utc_naive(end)],
    )
    return stored.join(frame.select(CANDLE_KEY), on=list(CANDLE_KEY), how="anti")


def _progress_line(frames: list[pl.DataFrame], symbol: str, interval: str, total: int, elapsed: float) -> str:
    """``BTCUSDT 60: 49,958 candles, 2,080 days (2020-03-25 .. 2025-12-05); series 1/3, 120,000 candles/s``."""
    part = frames[-1]
    loaded = sum(f.height for f in frames)
    if part.height:
        days = part["ts"].dt.date().n_unique()
        span = f"{days:,} days ({part['ts'].min().date()} .. {part['ts'].max().date()})"
    else:
        span = "no candles in the window"
    rate = f"{loaded / elapsed:,.0f} candles/s" if elapsed > 0 else "instant"
    return f"{symbol} {interval}: {part.height:,} candles, {span}; series {len(frames)}/{total}, {rate}"


def ingest_candles(
    source: MarketSource,
    warehouse: Warehouse,
    symbols: Sequence[str],
    intervals: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime | None = None,
    allow_shrink: bool = False,
    log: Callable[[str], None] | None = None,
) -> IngestReport:
    """Fetch, validate and store closed candles for every (symbol, interval) in [start, end).

    Nothing is lost silently: when the source lacks candles the warehouse already holds for the
    window (an empty or cut-short export, a file missing a symbol), this fails naming the symbol,
    interval and window, and writes nothing; ``allow_shrink=True`` replaces the window anyway.
    ``log`` gets one progress line per series fetched (candles, days covered, rate), so a run over
    years of history shows its progress from the first series on.
    """
    now = utc_naive(now or dt.datetime.now(dt.timezone.utc))
    frames = []
    series_total, t0 = len(symbols) * len(intervals), time.perf_counter()
    for symbol in symbols:
        for interval in intervals:
            part = conform(source.candles(symbol, interval, start, end), CANDLE_SCHEMA, f"{source.name} candles")
            _outside(part, start, end, f"{source.name} candles {symbol} {interval}")
            frames.append(part)
            if log is not None:
                log(_progress_line(frames, symbol, interval, series_total, time.perf_counter() - t0))
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=CANDLE_SCHEMA)
    problems = candle_problems(frame)
    if problems:
        raise MarketDataError(
            f"{source.name} candles for [{start}, {end}) rejected, nothing written:\n- " + "\n- ".join(problems)
        )
    lost = _lost_candles(warehouse, frame, symbols, intervals, start, end)
    if lost.height and not allow_shrink:
        have = frame.group_by("symbol", "interval").len()
        lines = []
        for (symbol, interval), part in lost.sort("ts").group_by(["symbol", "interval"], maintain_order=True):
            got = have.filter((pl.col("symbol") == symbol) & (pl.col("interval") == interval))["len"].sum()
            lines.append(
                f"{symbol} {interval} [{start}, {end}): {source.name} returned {got} candle(s) and lacks "
                f"{part.height} the warehouse holds (first {part['ts'][0]}, last {part['ts'][-1]})"
            )
        raise MarketDataError(
            "refusing to shrink stored candles, nothing written:\n- " + "\n- ".join(lines) + "\nCheck the "
            "source (an empty or cut-short export, a file missing a symbol); to replace the window anyway, "
            "set CONVTRADE_ALLOW_SHRINK=true (or `allow_shrink: true` in the run's settings config)."
        )
    replaced = _replace(warehouse, "raw.candles", frame, symbols, start, end, intervals)
    series = [(s, i) for s in symbols for i in intervals]
    return IngestReport(
        "raw.candles",
        source.name,
        start,
        end,
        frame.height,
        replaced,
        series_summary(frame, series, start, end, now, stored_bounds(warehouse, symbols, intervals)),
        empty_ranges=empty_day_ranges(frame, series, start, end, now),
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
    dataset = table.split(".", 1)[1]
    unavailable = getattr(source, "unavailable", None)  # optional: sources that always have data omit it
    skipped, offered = [], []
    for symbol in symbols:
        reason = unavailable(dataset, symbol, *(intervals or [])[:1]) if unavailable else None
        if reason:
            skipped.append(f"{symbol}: {reason}")
        else:
            offered.append(symbol)
    if not offered:  # nothing to fetch: skip at once, and keep whatever is stored
        return IngestReport(table, source.name, start, end, 0, 0, [], skipped=skipped)
    symbols = offered
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
    return IngestReport(table, source.name, start, end, frame.height, replaced, per_series, skipped=skipped)


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
