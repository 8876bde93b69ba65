"""Asset checks on the market tables: the great-expectations candle suite (blocking) and gap counts."""


import datetime as dt

import dagster as dg

from assets.market import markdown_table, raw_candles
from pipeline.market.ingest import series_summary, stored_bounds
from pipeline.quality.candles_suite import validate_candles
from assets.resources import SettingsResource, WarehouseResource


def last_window(context, asset_key: dg.AssetKey) -> tuple[dt.datetime, dt.datetime] | None:
    """The [start, end) that the latest materialization of ``asset_key`` wrote, from its metadata."""
    event = context.instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        return None
    meta = event.asset_materialization.metadata
    if "window_start" not in meta or "window_end" not in meta:
        return None
    return dt.datetime.fromisoformat(meta["window_start"].value), dt.datetime.fromisoformat(meta["window_end"].value)


@dg.asset_check(asset=raw_candles, blocking=True)
def raw_candles_expectations(
    context: dg.AssetCheckExecutionContext, settings: SettingsResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """GX suite on the candles of the latest materialization (every stored candle when there is none):
    not null, OHLC consistent, volume >= 0, unique key, ts on the grid. Gaps are counted in metadata."""
    cfg = settings.settings()
    window = last_window(context, raw_candles.key) or (dt.datetime(1970, 1, 1), dt.datetime(9999, 1, 1))
    frame = warehouse.warehouse().query(
        "select * from raw.candles where list_contains(?, symbol) and list_contains(?, interval) "
        "and ts >= ? and ts < ? order by symbol, interval, ts",
        [list(cfg.symbols), list(cfg.intervals), *window],
    )
    outcome = validate_candles(frame)
    series = [(s, i) for s in cfg.symbols for i in cfg.intervals]
    # The same coverage call as the ingest metadata (gaps between each series' first and last stored candle).
    gaps = series_summary(
        frame, series, *window, now=cfg.now(),
        bounds=stored_bounds(warehouse.warehouse(), cfg.symbols, cfg.intervals),
    )
    return dg.AssetCheckResult(
        passed=outcome.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.summary(),
        metadata={
            "window": f"[{window[0]}, {window[1]})",
            "rows_checked": dg.MetadataValue.int(frame.height),
            "expectations": dg.MetadataValue.int(outcome.evaluated),
            "failures": dg.MetadataValue.json(outcome.failures),
            "gaps": dg.MetadataValue.md(markdown_table(gaps)),
            "missing_bars": dg.MetadataValue.int(sum(row["missing_bars"] for row in gaps)),
        },
    )
