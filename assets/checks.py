"""Asset checks on the market tables: the great-expectations candle suite (blocking) and gap counts."""


import dagster as dg

from assets.market import _markdown_table, partition_window, raw_candles
from assets.partitions import daily_partitions
from pipeline.quality.candles_suite import count_gaps, validate_candles
from pipeline.resources import SettingsResource, WarehouseResource


@dg.asset_check(asset=raw_candles, blocking=True, partitions_def=daily_partitions)
def raw_candles_expectations(
    context: dg.AssetCheckExecutionContext, settings: SettingsResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """GX suite on the window's candles: not null, OHLC consistent, volume >= 0, unique key, on the grid."""
    cfg = settings.settings()
    start, end = partition_window(context)
    frame = warehouse.warehouse().query(
        "select * from raw.candles where list_contains(?, symbol) and list_contains(?, interval) "
        "and ts >= ? and ts < ? order by symbol, interval, ts",
        [list(cfg.symbols), list(cfg.intervals), start, end],
    )
    outcome = validate_candles(frame)
    gaps = count_gaps(frame)
    return dg.AssetCheckResult(
        passed=outcome.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.summary(),
        metadata={
            "rows_checked": dg.MetadataValue.int(frame.height),
            "expectations": dg.MetadataValue.int(outcome.evaluated),
            "failures": dg.MetadataValue.json(outcome.failures),
            "gaps": dg.MetadataValue.md(_markdown_table(gaps.with_columns(gaps["first_ts"].cast(str), gaps["last_ts"].cast(str)).to_dicts())),
            "missing_bars": dg.MetadataValue.int(int(gaps["missing_bars"].sum()) if gaps.height else 0),
        },
    )
