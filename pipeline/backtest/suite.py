"""The baseline suite over the warehouse: load candles / funding / features, backtest, report, store."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.backtest.costs import CostModel, funding_per_bar
from pipeline.backtest.engine import prepare_inputs
from pipeline.backtest.reports import write_reports
from pipeline.backtest.runs import BacktestRun, add_overfitting_statistics, run_baselines
from pipeline.backtest.store import store_runs
from pipeline.config import Settings
from pipeline.warehouse import Warehouse

FEATURES_TABLE = "features.candle_features"


def load_candles(warehouse: Warehouse, symbol: str, interval: str, start: str) -> pl.DataFrame:
    return warehouse.query(
        "select ts, open, high, low, close, volume from raw.candles "
        "where symbol = ? and interval = ? and ts >= cast(? as timestamp) order by ts",
        [symbol, interval, start],
    )


def load_funding(warehouse: Warehouse, symbol: str) -> pl.DataFrame:
    if not warehouse.table_exists("raw.funding"):
        return pl.DataFrame(schema={"ts": pl.Datetime("us"), "funding_rate": pl.Float64})
    return warehouse.query("select ts, funding_rate from raw.funding where symbol = ? order by ts", [symbol])


def load_model_features(warehouse: Warehouse, symbol: str, interval: str, candles: pl.DataFrame,
                        log: Callable[[str], None]) -> np.ndarray | None:
    """The model-input columns of ``features.candle_features`` aligned to ``candles``; None when absent."""
    try:
        from pipeline.features.columns import MODEL_INPUT_COLUMNS
    except ImportError:
        log("pipeline.features.columns.MODEL_INPUT_COLUMNS not available: logistic regression uses candle features")
        return None
    if not warehouse.table_exists(FEATURES_TABLE):
        log(f"{FEATURES_TABLE} is not in the warehouse: logistic regression uses features computed from candles")
        return None
    schema, name = FEATURES_TABLE.split(".")
    have = set(
        warehouse.query(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
            [schema, name],
        )["column_name"].to_list()
    )
    missing = [c for c in MODEL_INPUT_COLUMNS if c not in have]
    if missing:
        log(f"{FEATURES_TABLE} lacks {', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}: "
            "logistic regression uses features computed from candles")
        return None
    cols = ", ".join(f'cast("{c}" as double) as "{c}"' for c in MODEL_INPUT_COLUMNS)
    feats = warehouse.query(
        f"select ts, {cols} from {FEATURES_TABLE} where symbol = ? and interval = ?", [symbol, interval]
    )
    if feats.height == 0:
        log(f"{FEATURES_TABLE} has no rows for {symbol} {interval}: logistic regression uses candle features")
        return None
    joined = candles.select("ts").join(feats, on="ts", how="left")
    return joined.select(MODEL_INPUT_COLUMNS).fill_null(float("nan")).to_numpy().astype(np.float64)


@dataclasses.dataclass
class SuiteResult:
    runs: list[BacktestRun]
    rows_written: dict[str, int]
    comparison_report: Path | None
    pbo: dict[tuple[str, str], float]
    skipped: list[str]


def summary_markdown(runs: list[BacktestRun]) -> str:
    lines = ["| strategy | symbol | interval | total return | Sharpe | max DD | trades |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in runs:
        m = r.metrics
        sharpe = m.get("sharpe", math.nan)
        lines.append(
            f"| {r.strategy} | {r.symbol} | {r.interval} | {100 * m['total_return']:.2f}% | "
            f"{sharpe:.2f} | {100 * m['max_drawdown']:.2f}% | {m['n_trades']:.0f} |"
        )
    return "\n".join(lines)


def backtest_baselines(warehouse: Warehouse, settings: Settings, log: Callable[[str], None] = print,
                       min_bars: int = 200) -> SuiteResult:
    """Every baseline for every (symbol, interval) in ``settings``: backtest, reports, backtest.* rows."""
    costs = CostModel.from_settings(settings)
    runs: list[BacktestRun] = []
    skipped: list[str] = []
    for symbol in settings.symbols:
        funding = load_funding(warehouse, symbol)
        for interval in settings.intervals:
            candles = load_candles(warehouse, symbol, interval, settings.start)
            if candles.height < min_bars:
                msg = f"{symbol} {interval}: {candles.height} candles since {settings.start} (need {min_bars}); skipped"
                log(msg)
                skipped.append(msg)
                continue
            ts_ms = candles["ts"].dt.epoch("ms").to_numpy()
            fund = funding_per_bar(ts_ms, funding["ts"].dt.epoch("ms").to_numpy(), funding["funding_rate"].to_numpy())
            inputs = prepare_inputs(ts_ms, candles["open"].to_numpy(), candles["high"].to_numpy(),
                                    candles["low"].to_numpy(), candles["close"].to_numpy(),
                                    candles["volume"].to_numpy(), fund)
            features = load_model_features(warehouse, symbol, interval, candles, log)
            runs += run_baselines(symbol, interval, inputs, costs, features=features,
                                  feature_source="features.candle_features" if features is not None else "candles",
                                  log=log)
    if not runs:
        return SuiteResult([], {}, None, {}, skipped)
    pbo = add_overfitting_statistics(runs)
    pbo_rows = "".join(f"<tr><td class='l'>{s} · {i}</td><td>{v:.3f}</td></tr>" for (s, i), v in pbo.items())
    extra = ("<h2>Probability of backtest overfitting (CSCV over the baselines)</h2>"
             f"<table><tr><th class='l'>market</th><th>PBO</th></tr>{pbo_rows}</table>")
    comparison = write_reports(runs, Path(settings.reports_dir) / "backtests", extra)
    written = store_runs(warehouse, runs)
    return SuiteResult(runs, written, comparison, pbo, skipped)
