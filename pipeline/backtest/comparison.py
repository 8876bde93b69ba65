"""The comparison of every architecture and baseline, per symbol and pooled over symbols.

Columns: accuracy, macro F1, log-loss (direction head, scored bars only),
Sharpe after costs, max drawdown, turnover, deflated Sharpe with its number of
trials (the strategies actually tried in the run's family on its market),
PBO across the family's runs and training time. "Pooled" is the
equal-weight portfolio of a strategy over the symbols (mean of its per-bar
returns on their common bars); its deflated Sharpe counts the pooled Sharpes
of the family's strategies, and its PBO is CSCV across them.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pipeline.backtest.metrics import bar_returns, drawdown, sharpe_ratio
from pipeline.backtest.overfitting import (deflated_sharpe_of_returns, probability_of_backtest_overfitting,
                                           sharpe_moments)
from pipeline.backtest.runs import BENCHMARK_FAMILY, BacktestRun
from pipeline.market.timegrid import bars_per_year

COLUMNS = ("strategy", "family", "symbol", "interval", "accuracy", "macro_f1", "log_loss", "sharpe",
           "max_drawdown", "turnover", "deflated_sharpe", "dsr_trials", "pbo", "train_seconds")


def _row(r: BacktestRun, pbo: dict) -> dict:
    m = r.metrics
    return {"strategy": r.strategy, "family": r.family, "symbol": r.symbol, "interval": r.interval,
            "accuracy": m.get("clf_accuracy"), "macro_f1": m.get("clf_macro_f1"), "log_loss": m.get("clf_log_loss"),
            "sharpe": m.get("sharpe"), "max_drawdown": m.get("max_drawdown"), "turnover": m.get("turnover"),
            "deflated_sharpe": m.get("deflated_sharpe"), "dsr_trials": m.get("dsr_trials"),
            "pbo": pbo.get((r.symbol, r.interval, r.family)), "train_seconds": m.get("train_seconds")}


def pooled_returns(runs: list[BacktestRun]) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight per-bar returns of one strategy's runs over their common bars, and those bars (ms)."""
    common = runs[0].result.ts_ms
    for r in runs[1:]:
        common = np.intersect1d(common, r.result.ts_ms)
    rets = []
    for r in runs:
        x = bar_returns(r.result.equity, r.result.initial_equity)
        rets.append(x[np.searchsorted(r.result.ts_ms, common)])
    return np.mean(rets, axis=0), common


def comparison_table(runs: list[BacktestRun], pbo: dict, n_splits: int = 8) -> pl.DataFrame:
    """One row per run, then one pooled row (symbol ``pooled``) per (strategy, interval) over several symbols."""
    rows = [_row(r, pbo) for r in runs]
    by: dict[tuple[str, str, str], list[BacktestRun]] = {}
    for r in runs:
        by.setdefault((r.family, r.interval, r.strategy), []).append(r)
    pooled: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for (family, interval, strategy), members in by.items():
        if len({r.symbol for r in members}) < 2:
            continue
        rets, _ = pooled_returns(members)
        pooled.setdefault((family, interval), {})[strategy] = rets
    for (family, interval), strategies in pooled.items():
        sharpes = [sharpe_moments(x)[0] for x in strategies.values() if x.std() > 0]
        pbo_value = None
        lengths = {x.shape[0] for x in strategies.values()}
        if family != BENCHMARK_FAMILY and len(strategies) >= 2 and len(lengths) == 1 and lengths.pop() >= 2 * n_splits:
            pbo_value = probability_of_backtest_overfitting(np.column_stack(list(strategies.values())), n_splits)["pbo"]
        for strategy, rets in strategies.items():
            members = by[(family, interval, strategy)]
            equity = np.cumprod(1.0 + rets)
            dsr = None
            if family != BENCHMARK_FAMILY and rets.std() > 0:
                dsr = deflated_sharpe_of_returns(rets, np.asarray(sharpes))
            rows.append({"strategy": strategy, "family": family, "symbol": "pooled", "interval": interval,
                         "accuracy": None, "macro_f1": None, "log_loss": None,
                         "sharpe": sharpe_ratio(rets, bars_per_year(interval)),
                         "max_drawdown": float(drawdown(np.r_[1.0, equity]).min()),
                         "turnover": float(np.mean([r.metrics.get("turnover", math.nan) for r in members])),
                         "deflated_sharpe": dsr, "dsr_trials": float(len(sharpes)) if dsr is not None else None,
                         "pbo": pbo_value, "train_seconds": members[0].metrics.get("train_seconds")})
    return pl.DataFrame(rows, schema={c: (pl.String if i < 4 else pl.Float64) for i, c in enumerate(COLUMNS)})


def comparison_markdown(table: pl.DataFrame) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "–"
        return v if isinstance(v, str) else f"{v:.3f}"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in table.iter_rows(named=True)]
    return "\n".join(lines)
