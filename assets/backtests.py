"""Backtest assets: the baselines (benchmarks and reference strategies) on the engine and costs the models use."""

import dagster as dg

from pipeline.backtest.suite import run_baseline_suite, summary_markdown
from assets.resources import SettingsResource, WarehouseResource


@dg.asset(
    key=["backtest", "baselines"],
    group_name="backtest",
    pool="warehouse",
    deps=[dg.AssetKey(["raw", "candles"]), dg.AssetKey(["raw", "funding"]),
          dg.AssetKey(["features", "candle_features"]), dg.AssetKey(["features", "labels"])],
    description="The baselines every model is compared against, per symbol and interval: buy and hold of the "
                "perpetual (with funding) and of spot, flat, MA momentum and a walk-forward logistic regression "
                "on features.labels traded by the cost-aware edge rule; backtest.* rows (deflated Sharpe with its "
                "trials) and HTML reports under DATA_DIR/reports/backtests/.",
)
def backtest_baselines(context: dg.AssetExecutionContext, settings: SettingsResource,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
    result = run_baseline_suite(warehouse.warehouse(), settings.settings(), log=context.log.info)
    metadata: dict = {f"rows_{table.split('.')[1]}": dg.MetadataValue.int(n) for table, n in result.rows_written.items()}
    metadata["runs"] = dg.MetadataValue.int(len(result.runs))
    metadata["summary"] = dg.MetadataValue.md(summary_markdown(result.runs) if result.runs else "no runs")
    if result.comparison_report is not None:
        metadata["comparison_report"] = dg.MetadataValue.path(str(result.comparison_report))
    if result.skipped:
        metadata["skipped"] = dg.MetadataValue.text("\n".join(result.skipped))
    return dg.MaterializeResult(metadata=metadata)
