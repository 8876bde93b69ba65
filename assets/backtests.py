"""Backtest assets: the baselines (benchmarks and reference strategies), the trained models on the same engine and
costs, and the comparison of all of them."""

import dagster as dg

from assets.monitoring import rows_written_metadata
from assets.resources import SettingsResource, WarehouseResource
from assets.training import MODEL_KEYS
from pipeline.backtest.comparison import run_comparison
from pipeline.backtest.model_backtests import run_model_backtests
from pipeline.backtest.baselines import run_baseline_suite, summary_markdown


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
    metadata: dict = rows_written_metadata(result.rows_written)
    metadata["runs"] = dg.MetadataValue.int(len(result.runs))
    metadata["summary"] = dg.MetadataValue.md(summary_markdown(result.runs) if result.runs else "no runs")
    if result.comparison_report is not None:
        metadata["comparison_report"] = dg.MetadataValue.path(str(result.comparison_report))
    if result.skipped:
        metadata["skipped"] = dg.MetadataValue.text("\n".join(result.skipped))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=["backtest", "models"],
    group_name="backtest",
    pool="warehouse",
    deps=[*MODEL_KEYS, dg.AssetKey(["raw", "candles"]), dg.AssetKey(["raw", "funding"]),
          dg.AssetKey(["features", "labels"])],
    description="Every trained architecture's out-of-sample predictions (predictions.oos) traded by each fold's "
                "edge rule, through the same engine, costs and risk rules as the baselines: backtest.* rows "
                "(deflated Sharpe over the architectures tried, PBO across them) and HTML reports under "
                "DATA_DIR/reports/models/.",
)
def backtest_models(context: dg.AssetExecutionContext, settings: SettingsResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    cfg = settings.settings()
    runs, info = run_model_backtests(warehouse.warehouse(), cfg, horizon=cfg.horizon, log=context.log.info)
    metadata: dict = rows_written_metadata(info["rows_written"])
    metadata["runs"] = dg.MetadataValue.int(len(runs))
    metadata["summary"] = dg.MetadataValue.md(summary_markdown(runs) if runs else "no model predictions yet")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=["backtest", "comparison"],
    group_name="backtest",
    deps=[dg.AssetKey(["backtest", "baselines"]), dg.AssetKey(["backtest", "models"])],
    description="The verdict: every current strategy of a market on the same test bars, the model selected on "
                "validation against the best baseline and spot buy and hold (Ledoit-Wolf bootstrap of the Sharpe "
                "difference, Diebold-Mariano on log-loss, Holm), the resolvable difference; then every architecture "
                "and baseline, per symbol and pooled: accuracy, macro F1, log-loss, Sharpe after costs, max "
                "drawdown, turnover, deflated Sharpe with its trials, PBO, training time. Writes "
                "DATA_DIR/reports/comparison.html; reads the stored runs only.",
)
def backtest_comparison(context: dg.AssetExecutionContext, settings: SettingsResource,
                        warehouse: WarehouseResource) -> dg.MaterializeResult:
    from pipeline.backtest.verdict import verdict_sentence

    result = run_comparison(warehouse.warehouse(), settings.settings())
    metadata: dict = {"runs": dg.MetadataValue.int(result.runs), "table": dg.MetadataValue.md(result.markdown)}
    if result.verdict is not None:
        sentence = verdict_sentence(result.verdict)
        context.log.info(f"{sentence} (statistics: {result.verdict.seconds:.1f} s)")
        metadata["verdict"] = dg.MetadataValue.text(sentence)
        metadata["verdict_tables"] = dg.MetadataValue.md(result.verdict_markdown)
        metadata["verdict_seconds"] = dg.MetadataValue.float(round(result.verdict.seconds, 3))
    if result.report_path is not None:
        metadata["report"] = dg.MetadataValue.path(str(result.report_path))
    return dg.MaterializeResult(metadata=metadata)
