"""Write backtest runs to backtest.runs / trades / equity / metrics, keyed by run_id.

The four tables are rewritten for exactly the run ids being stored, in one
transaction, so storing the same runs twice leaves the same rows and a crash
between two tables leaves all four as they were.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.backtest.metrics import drawdown
from pipeline.backtest.evaluation import BacktestRun
from pipeline.warehouse import Replacement, Warehouse

TS = pl.Datetime("us")


def _ts(ms: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(ms, dtype=np.int64) * 1000).cast(TS)


def stored_report_path(path: str | Path | None, data_dir: str | Path) -> str | None:
    """How ``backtest.runs.report_path`` stores a report: relative to DATA_DIR (``reports/backtests/x.html``),
    so moving DATA_DIR keeps the links and identical runs in two folders store identical rows. A report
    outside DATA_DIR keeps its absolute path."""
    if path is None:
        return None
    path, base = Path(path).resolve(), Path(data_dir).resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def resolve_report_path(stored: str | None, data_dir: str | Path) -> Path | None:
    """The file of a stored ``report_path`` (relative to ``data_dir``, or absolute)."""
    return None if stored is None else Path(data_dir) / stored


def runs_frame(runs: list[BacktestRun], data_dir: str | Path = os.curdir) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": [r.run_id for r in runs],
            "strategy": [r.strategy for r in runs],
            "family": [r.family for r in runs],
            "symbol": [r.symbol for r in runs],
            "interval": [r.interval for r in runs],
            "config": [json.dumps(r.config, sort_keys=True, default=str) for r in runs],
            "model_ids": [list(r.model_ids) for r in runs],
            "data_fingerprint": [r.data_fingerprint for r in runs],
            "start_ts": _ts(np.array([r.result.ts_ms[0] for r in runs], dtype=np.int64)),
            "end_ts": _ts(np.array([r.result.ts_ms[-1] for r in runs], dtype=np.int64)),
            "report_path": [stored_report_path(r.report_path, data_dir) for r in runs],
        },
        schema_overrides={"model_ids": pl.List(pl.String), "report_path": pl.String},
    )


def trades_frame(run: BacktestRun) -> pl.DataFrame:
    t = run.result.trades_table()
    still_open = t["exit_reason"] == "open"
    exit_ts = _ts(t["exit_ts_ms"]).scatter(np.flatnonzero(still_open).tolist(), None) if still_open.any() else _ts(t["exit_ts_ms"])
    exit_px = np.where(still_open, np.nan, t["exit_price"])
    return pl.DataFrame(
        {
            "run_id": pl.Series([run.run_id] * len(t["trade_no"]), dtype=pl.String),
            "trade_no": pl.Series(t["trade_no"], dtype=pl.Int32),
            "side": pl.Series(t["side"], dtype=pl.Int32),
            "entry_ts": _ts(t["entry_ts_ms"]),
            "exit_ts": exit_ts,
            "entry_price": t["entry_price"],
            "exit_price": pl.Series(exit_px).fill_nan(None),
            "size": t["size"],
            "pnl": t["pnl"],
            "fees": t["fees"],
            "funding": t["funding"],
            "exit_reason": pl.Series(t["exit_reason"].tolist(), dtype=pl.String),
        }
    )


def equity_frame(run: BacktestRun) -> pl.DataFrame:
    res = run.result
    return pl.DataFrame(
        {
            "run_id": pl.Series([run.run_id] * res.equity.shape[0], dtype=pl.String),
            "ts": _ts(res.ts_ms),
            "equity": res.equity,
            "position": res.position,
            "drawdown": drawdown(res.equity),
            "log_loss": (pl.Series(run.bar_log_loss, dtype=pl.Float64).fill_nan(None) if run.bar_log_loss is not None
                         else pl.Series([None] * res.equity.shape[0], dtype=pl.Float64)),
        }
    )


def metrics_frame(run: BacktestRun) -> pl.DataFrame:
    names = sorted(run.metrics)
    values = [float(run.metrics[k]) for k in names]
    return pl.DataFrame(
        {
            "run_id": [run.run_id] * len(names),
            "metric": names,
            "value": pl.Series([v if math.isfinite(v) else None for v in values], dtype=pl.Float64),
        }
    )


def store_runs(warehouse: Warehouse, runs: list[BacktestRun]) -> dict[str, int]:
    """Replace the rows of these run ids in the four backtest tables; returns rows written per table.

    Report paths are stored relative to the warehouse's folder, DATA_DIR (``Settings.warehouse_path``);
    read them back with :func:`resolve_report_path`.
    """
    if not runs:
        return {"backtest.runs": 0, "backtest.trades": 0, "backtest.equity": 0, "backtest.metrics": 0}
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate run ids in one store: {sorted({i for i in ids if ids.count(i) > 1})}")
    frames = {
        "backtest.runs": runs_frame(runs, warehouse.path.parent),
        "backtest.trades": pl.concat([trades_frame(r) for r in runs], how="vertical"),
        "backtest.equity": pl.concat([equity_frame(r) for r in runs], how="vertical"),
        "backtest.metrics": pl.concat([metrics_frame(r) for r in runs], how="vertical"),
    }
    warehouse.replace_tables(
        [Replacement(table, frame, "list_contains(?::varchar[], run_id)", [ids]) for table, frame in frames.items()]
    )
    return {table: frame.height for table, frame in frames.items()}
