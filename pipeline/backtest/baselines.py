"""The baseline suite over the warehouse: load candles / funding / features / labels, backtest, report, store.

"Baselines" are what every model is compared against: the benchmarks (buy
and hold of the perpetual and of spot, flat) and the reference strategies
(MA momentum, the cost-aware logistic regression) of
:mod:`pipeline.backtest.strategies`, on every (symbol, interval) of the settings.
The Dagster asset ``backtest/baselines`` calls :func:`run_baseline_suite`.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core.costs import CostModel, funding_per_bar
from pipeline.backtest.engine import prepare_inputs
from pipeline.backtest.reports import write_reports
from pipeline.backtest.evaluation import BacktestRun, add_overfitting_statistics, run_market_baselines
from pipeline.backtest.tables import store_runs
from pipeline.backtest.strategies import LabelledFeatures
from pipeline.config import Settings
from pipeline.core.columns import FEATURES_TABLE, MODEL_INPUT_COLUMNS
from pipeline.core.splits import GridFold, grid_folds
from pipeline.core.timegrid import interval_ms
from pipeline.core.windows import valid_window_ends
from pipeline.market.stored import load_candles, load_funding
from pipeline.features.labels import LABELS_TABLE, UNKNOWN_CLASS, load_labels
from pipeline.warehouse import Warehouse



def load_labelled_features(warehouse: Warehouse, symbol: str, interval: str, candles: pl.DataFrame, horizon: int,
                           log: Callable[[str], None]) -> LabelledFeatures | None:
    """Model inputs of ``features.candle_features`` and ``features.labels`` at ``horizon``, aligned to ``candles``.

    None (with a log line saying what is missing) when either table, a model
    input column or this market's rows are absent: the logistic regression is
    then skipped, never fed another feature set.
    """
    for table in (FEATURES_TABLE, LABELS_TABLE):
        if not warehouse.table_exists(table):
            log(f"{table} is not in the warehouse: logistic regression skipped for {symbol} {interval} "
                "(materialize features/candle_features and features/labels first)")
            return None
    schema, name = FEATURES_TABLE.split(".")
    have = set(
        warehouse.query(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
            [schema, name],
        )["column_name"].to_list()
    )
    missing = [c for c in ("is_warmup", *MODEL_INPUT_COLUMNS) if c not in have]
    if missing:
        log(f"{FEATURES_TABLE} lacks {', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}: "
            f"logistic regression skipped for {symbol} {interval}")
        return None
    cols = ", ".join(f'cast("{c}" as double) as "{c}"' for c in MODEL_INPUT_COLUMNS)
    feats = warehouse.query(
        f"select ts, is_warmup, {cols} from {FEATURES_TABLE} where symbol = ? and interval = ?", [symbol, interval]
    )
    labels = load_labels(warehouse, symbol, interval, horizon)
    if feats.height == 0 or labels.height == 0:
        log(f"{FEATURES_TABLE} has {feats.height} and {LABELS_TABLE} {labels.height} rows for {symbol} {interval} "
            f"(horizon {horizon}): logistic regression skipped")
        return None
    joined = (candles.select("ts")
              .join(feats.with_columns(_has_row=pl.lit(True)), on="ts", how="left")
              .join(labels.select("ts", "fwd_return", "label_class"), on="ts", how="left"))
    x = joined.select(MODEL_INPUT_COLUMNS).fill_null(float("nan")).to_numpy().astype(np.float64)
    usable = (joined["_has_row"].fill_null(False) & ~joined["is_warmup"].fill_null(True)).to_numpy()
    usable &= np.all(np.isfinite(x), axis=1)
    return LabelledFeatures(
        features=x, usable=usable,
        fwd_return=joined["fwd_return"].cast(pl.Float64).fill_null(float("nan")).to_numpy(),
        label_class=joined["label_class"].fill_null(UNKNOWN_CLASS).to_numpy().astype(np.int64),
        horizon=horizon, source=FEATURES_TABLE,
    )


@dataclasses.dataclass
class SuiteResult:
    runs: list[BacktestRun]
    rows_written: dict[str, int]
    comparison_report: Path | None
    pbo: dict[tuple[str, str, str], float]  # (symbol, interval, family) -> PBO, families with >= 2 runs
    skipped: list[str]


def _num(value, fmt: str = ".2f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, fmt)


def summary_markdown(runs: list[BacktestRun]) -> str:
    lines = ["| strategy | family | symbol | interval | total return | Sharpe (net) | Sharpe (gross) | max DD | trades "
             "| liquidations | PSR | deflated Sharpe | DSR trials |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        m = r.metrics
        lines.append(
            f"| {r.strategy} | {r.family} | {r.symbol} | {r.interval} | {100 * m['total_return']:.2f}% | "
            f"{_num(m.get('sharpe'))} | {_num(m.get('gross_sharpe'))} | {100 * m['max_drawdown']:.2f}% | "
            f"{m['n_trades']:.0f} | {_num(m.get('n_liquidations'), '.0f')} | {_num(m.get('psr'), '.3f')} | {_num(m.get('deflated_sharpe'), '.3f')} | "
            f"{_num(m.get('dsr_trials'), '.0f')} |"
        )
    return "\n".join(lines)


def market_grid_folds(series: list[tuple[np.ndarray, LabelledFeatures]], settings: Settings, interval: str,
                      horizon: int) -> list[GridFold]:
    """The models' folds for the markets of one interval: :func:`pipeline.core.splits.grid_folds` over the
    distinct timestamps of every symbol's valid window ends (``settings.window`` complete input bars and a
    known label at ``horizon``: the samples the models train and test on), with the training settings'
    fold count, train share, embargo, validation tail and rolling flag."""
    step = interval_ms(interval)
    grids = []
    for ts_ms, lab in series:
        known = (lab.label_class >= 0) & np.isfinite(lab.fwd_return)
        ok, _ = valid_window_ends(ts_ms, ~lab.usable, known, step, settings.window, horizon, lab.features)
        grids.append(ts_ms[ok])
    return grid_folds(np.concatenate(grids) if grids else np.zeros(0, np.int64), settings.n_folds,
                      settings.train_min_fraction, horizon, settings.embargo_bars, settings.validation_fraction,
                      settings.rolling_train)


def run_baseline_suite(warehouse: Warehouse, settings: Settings, log: Callable[[str], None] = print,
                       min_bars: int = 200, horizon: int | None = None) -> SuiteResult:
    """Every baseline for every (symbol, interval) in ``settings``: backtest, reports, backtest.* rows.

    The logistic regressions learn ``features.labels`` at ``horizon`` bars (None: ``settings.horizon``, the
    models' horizon) on the models' folds (:func:`market_grid_folds`), so every strategy of a market shares
    one test span.
    """
    horizon = settings.horizon if horizon is None else int(horizon)
    runs: list[BacktestRun] = []
    skipped: list[str] = []
    for interval in settings.intervals:
        markets = []
        for symbol in settings.symbols:
            costs = CostModel.from_settings(settings, symbol)  # the symbol's maintenance margin rate
            funding = load_funding(warehouse, symbol)
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
            labelled = load_labelled_features(warehouse, symbol, interval, candles, horizon, log)
            markets.append((symbol, costs, inputs, labelled))
        folds = None
        labelled_series = [(inputs.ts_ms, lab) for _, _, inputs, lab in markets if lab is not None]
        if labelled_series:
            try:
                folds = market_grid_folds(labelled_series, settings, interval, horizon)
            except ValueError as exc:
                log(f"interval {interval}: the models' folds do not fit the data ({exc}); the logistic regression "
                    "runs its own folds and no common test span is marked")
        for symbol, costs, inputs, labelled in markets:
            runs += run_market_baselines(symbol, interval, inputs, costs, labelled=labelled, log=log, folds=folds,
                                         window=settings.window if folds else None)
    if not runs:
        return SuiteResult([], {}, None, {}, skipped)
    pbo = add_overfitting_statistics(runs)
    comparison = write_reports(runs, Path(settings.reports_dir) / "backtests", overfitting_html(runs, pbo),
                               plotly_folder=Path(settings.reports_dir))
    written = store_runs(warehouse, runs)
    return SuiteResult(runs, written, comparison, pbo, skipped)


def overfitting_html(runs: list[BacktestRun], pbo: dict[tuple[str, str, str], float]) -> str:
    """The deflation table of the comparison report: each run's PSR, DSR, its trials and their Sharpe variance."""
    rows = "".join(
        f"<tr><td class='l'>{html.escape(r.strategy)}</td><td class='l'>{html.escape(r.family)}</td>"
        f"<td class='l'>{html.escape(r.symbol)} · {html.escape(r.interval)}</td>"
        f"<td>{_num(r.metrics.get('psr'), '.3f')}</td><td>{_num(r.metrics.get('deflated_sharpe'), '.3f')}</td>"
        f"<td>{_num(r.metrics.get('dsr_trials'), '.0f')}</td><td>{_num(r.metrics.get('dsr_sharpe_variance'), '.3g')}</td>"
        f"<td>{_num(pbo.get((r.symbol, r.interval, r.family)), '.3f')}</td></tr>"
        for r in runs
    )
    return ("<h2>Deflation over each strategy's trials</h2>"
            "<p class='muted'>PSR: probabilistic Sharpe ratio against zero. A strategy's deflated Sharpe counts "
            "the trials of its family on the same market (the configurations tried for it); benchmarks were "
            "not selected among trials and show their PSR only. Sharpe variance: of the trials' per-bar Sharpe "
            "ratios. PBO (CSCV) needs two trials or more in a family.</p>"
            "<table><tr><th class='l'>strategy</th><th class='l'>family</th><th class='l'>market</th><th>PSR</th>"
            "<th>deflated Sharpe</th><th>trials</th><th>Sharpe variance</th><th>PBO</th></tr>"
            f"{rows}</table>")
