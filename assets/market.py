"""Market assets (group ``market``): raw candles, funding, open interest and order-book snapshots.

Monthly UTC partitions (assets/partitions.py); a backfill of many months runs as one run that reads
the whole partition window. Each asset calls one ``pipeline.market.ingest``
function, which validates before it replaces exactly the window's rows.
"""


import datetime as dt
import time

import dagster as dg

from assets.partitions import market_partitions, month_key, partition_window
from pipeline.market.base import SourceUnavailable
from pipeline.market.ingest import (
    IngestReport,
    build_source,
    ingest_candles,
    ingest_funding,
    ingest_open_interest,
    ingest_orderbook,
)
from assets.resources import SettingsResource, WarehouseResource

MARKET_ASSET = dict(
    group_name="market",
    partitions_def=market_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
    kinds={"duckdb", "polars"},
)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "_no rows in this window_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def report_metadata(report: IngestReport) -> dict:
    metadata = {
        "table": report.table,
        "source": report.source,
        "window_start": str(report.start),
        "window_end": str(report.end),
        "rows_written": dg.MetadataValue.int(report.rows_written),
        "rows_replaced": dg.MetadataValue.int(report.rows_replaced),
        "series": dg.MetadataValue.md(markdown_table(report.per_series)),
    }
    if report.table == "raw.candles":
        metadata["missing_bars"] = dg.MetadataValue.int(report.missing_bars)
        metadata["empty_days"] = dg.MetadataValue.int(sum(r["days"] for r in report.empty_ranges))
        if report.empty_ranges:
            metadata["empty_ranges"] = dg.MetadataValue.md(markdown_table(report.empty_ranges))
    if report.skipped:
        metadata["skipped"] = "; ".join(report.skipped)
    return metadata


def empty_ranges_line(report: IngestReport) -> str | None:
    """One log line naming every past range with no candle of a configured series (None when there is none)."""
    if not report.empty_ranges:
        return None
    parts = [f"{r['symbol']} {r['interval']} [{r['start']}, {r['end']}) ({r['days']} days)" for r in report.empty_ranges]
    return f"{report.table}: {report.source} returned no candles for " + "; ".join(parts)


def _run(context, settings: SettingsResource, ingest, args_of) -> dg.MaterializeResult:
    cfg = settings.settings()
    start, end = partition_window(context, cfg.now())
    days = (end - start).days if start is not None else 0
    name = context.assets_def.key.to_user_string()
    context.log.info(f"{name}: fetching [{start}, {end}) ({days:,} days) from {cfg.source}")
    t0 = time.perf_counter()
    try:
        report = ingest(build_source(cfg), *args_of(cfg), start, end)
    except SourceUnavailable as exc:
        context.log.warning(f"market source unavailable, will retry: {exc}")
        raise dg.RetryRequested(max_retries=3, seconds_to_wait=30) from exc
    skipped = f"skipped, {report.source} has no such data ({'; '.join(report.skipped)})" if report.skipped else ""
    if len(report.skipped) == len(cfg.symbols):  # nothing was fetched
        context.log.info(f"{report.table}: {skipped}")
    else:
        elapsed = time.perf_counter() - t0
        context.log.info(
            f"{report.table}: {report.rows_written:,} rows from {report.source} for [{start}, {end}) "
            f"({days:,} days) in {elapsed:.1f} s ({report.rows_written / max(elapsed, 1e-9):,.0f} rows/s)"
            + (f"; {skipped}" if skipped else "")
        )
    if line := empty_ranges_line(report):
        context.log.warning(line)
    flag_empty_partitions(context, report)
    return dg.MaterializeResult(metadata=report_metadata(report))


def flag_empty_partitions(context, report: IngestReport) -> None:
    """On each month of the run with days that hold no candle of some configured series, the metadata
    of that month's partition names the series and the empty days (``no_candles``); the other months
    carry no such entry. Adds nothing but metadata to the events Dagster writes anyway."""
    if not report.empty_ranges or not (context.has_partition_key or context.has_partition_key_range):
        return
    keys = set(context.partition_keys)
    empty: dict[str, list[str]] = {}
    for r in report.empty_ranges:
        first, last = dt.date.fromisoformat(r["start"]), dt.date.fromisoformat(r["end"])
        month = first.replace(day=1)
        while month < last:
            following = (month + dt.timedelta(days=32)).replace(day=1)
            lo, hi = max(first, month), min(last, following)
            empty.setdefault(month_key(month), []).append(f"{r['symbol']} {r['interval']} [{lo}, {hi})")
            month = following
    for key, series in empty.items():
        if key in keys:
            context.add_asset_metadata({"no_candles": ", ".join(series)}, partition_key=key)


@dg.asset(key=["raw", "candles"], **MARKET_ASSET)
def raw_candles(
    context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Closed OHLCV candles (open time, UTC) for every configured symbol and interval."""
    cfg = settings.settings()

    def ingest(source, wh, symbols, intervals, start, end):
        return ingest_candles(source, wh, symbols, intervals, start, end, now=cfg.now(),
                              allow_shrink=cfg.allow_shrink, log=context.log.info)

    return _run(context, settings, ingest, lambda cfg: (warehouse.warehouse(), cfg.symbols, cfg.intervals))


@dg.asset(key=["raw", "funding"], **MARKET_ASSET)
def raw_funding(
    context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Perpetual funding rate at each settlement (per 8h, as a fraction)."""
    return _run(context, settings, ingest_funding, lambda cfg: (warehouse.warehouse(), cfg.symbols))


@dg.asset(key=["raw", "open_interest"], **MARKET_ASSET)
def raw_open_interest(
    context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Open interest at each bar open, where the source has it."""
    return _run(
        context, settings, ingest_open_interest, lambda cfg: (warehouse.warehouse(), cfg.symbols, cfg.intervals)
    )


@dg.asset(key=["raw", "orderbook"], **MARKET_ASSET)
def raw_orderbook(
    context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Top-N order-book snapshots (bid/ask price and size arrays, best first)."""
    return _run(
        context,
        settings,
        lambda source, wh, symbols, levels, start, end: ingest_orderbook(source, wh, symbols, start, end, levels),
        lambda cfg: (warehouse.warehouse(), cfg.symbols, cfg.orderbook_levels),
    )
