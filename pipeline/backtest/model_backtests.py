"""Backtests of the trained models: ``predictions.oos`` -> positions -> the engine, as the baselines are run.

Each fold's out-of-sample probabilities are traded by that fold's edge rule
(:class:`pipeline.core.positions.EdgeRule`, fitted on the fold's training /
validation rows and stored in the ``edge_rule`` entry of its
``models.registry`` metrics), with the same :class:`CostModel` and
:class:`RiskRules` as the logistic-regression baseline. A bar without a
prediction (before the first test bar, a dropped sample) is flat, so a
model's backtest is flat before its first test bar.

The edge rule holds a position while the expected move keeps its side; here
its state restarts at each fold's first test bar (a fold's rule never sees the
previous fold's position), which can only add trades at the fold boundaries.

All architectures on one market are trials of one another: their runs share
the family :data:`MODEL_FAMILY`, so their deflated Sharpe counts every
architecture tried there, and PBO is computed across them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable

import numpy as np
import polars as pl

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import EngineInputs
from pipeline.backtest.metrics import binomial_p_value, per_bar_log_loss, scored_classification  # noqa: F401
from pipeline.backtest.risk import RiskRules
from pipeline.backtest.evaluation import BacktestRun, evaluate, make_run_id
from pipeline.core.positions import EdgeRule, edge_targets

MODEL_FAMILY = "models"  # every trained architecture, sequence and image: one selection, one family
PROBA_COLUMNS = ("p_down", "p_flat", "p_up")


def edge_rule_of(metrics: dict | str, model_id: str) -> EdgeRule:
    """The fold's :class:`EdgeRule` from its registry metrics (``margin`` None: never trade)."""
    m = json.loads(metrics) if isinstance(metrics, str) else dict(metrics or {})
    rule = m.get("edge_rule")
    if not rule:
        raise ValueError(f"models.registry row {model_id!r} has no edge_rule in its metrics: retrain the model "
                         "(the training step fits the rule on the fold's training / validation rows)")
    margin = rule.get("margin")
    return EdgeRule(tuple(float(r) for r in rule["class_returns"]), float(rule["round_trip_cost"]),
                    math.inf if margin is None else float(margin), float(rule.get("fraction", 1.0)),
                    bool(rule.get("allow_short", True)))


def model_targets(ts_ms: np.ndarray, predictions: pl.DataFrame, registry: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Target positions on the bars ``ts_ms`` of one market, and the probability matrix aligned to them.

    ``predictions`` are this market's ``predictions.oos`` rows of one
    architecture; ``registry`` its ``models.registry`` rows (model_id, metrics).
    Each model's rows are traded by its own rule, in its own segment; bars
    without a prediction get NaN probabilities and a flat target. A prediction
    on a ts that is not a candle of the market is an error.
    """
    n = ts_ms.shape[0]
    proba = np.full((n, 3), np.nan)
    target = np.zeros(n)
    rules = {mid: edge_rule_of(m, mid) for mid, m in zip(registry["model_id"], registry["metrics"])}
    for mid, rows in predictions.sort("ts").group_by("model_id", maintain_order=True):
        mid = mid[0]
        if mid not in rules:
            raise ValueError(f"predictions.oos has rows of model {mid!r} that models.registry does not know")
        ts = rows["ts"].dt.epoch("ms").to_numpy()
        idx = np.searchsorted(ts_ms, ts)
        bad = (idx >= n) | (ts_ms[np.minimum(idx, n - 1)] != ts)
        if bad.any():
            raise ValueError(f"model {mid!r} predicts ts {rows['ts'][int(np.argmax(bad))]} where the market "
                             "has no candle: predictions and raw.candles disagree")
        if np.isfinite(proba[idx]).any():
            raise ValueError(f"model {mid!r} predicts bars another fold already predicts: folds overlap")
        proba[idx] = rows.select(PROBA_COLUMNS).to_numpy()
        lo, hi = int(idx.min()), int(idx.max()) + 1
        segment = np.full((hi - lo, 3), np.nan)
        segment[idx - lo] = proba[idx]
        target[lo:hi] = edge_targets(segment, rules[mid])
    return target, proba


def selection_val_loss(registry: pl.DataFrame) -> float:
    """The validation loss an architecture is selected on: the best validation loss of its first fold (the
    only validation tail that ends before every test bar; later folds' tails lie in earlier folds' test
    blocks). ``registry``: its models.registry rows (model_id, metrics; ``fold`` when present, else the
    order of the rows). NaN when the first fold recorded none."""
    if registry.height == 0:
        return math.nan
    rows = registry.sort("fold") if "fold" in registry.columns else registry
    m = rows["metrics"][0]
    m = json.loads(m) if isinstance(m, str) else dict(m or {})
    try:
        return float(m.get("best_val_loss", math.nan))
    except (TypeError, ValueError):
        return math.nan


def model_run(architecture: str, symbol: str, interval: str, inputs: EngineInputs, predictions: pl.DataFrame,
              registry: pl.DataFrame, label_class: np.ndarray, costs: CostModel, risk: RiskRules = RiskRules(),
              horizon: int = 1) -> BacktestRun:
    """The backtest of one architecture on one market (see the module docstring).

    ``label_class`` (aligned to ``inputs.ts_ms``, -1 unknown) scores the
    direction head on the predicted bars. The run id depends on the
    architecture, market, horizon, costs and risk only, so a retrain replaces
    the run; the fold rules and model ids are stored in its config.
    """
    target, proba = model_targets(inputs.ts_ms, predictions, registry)
    clf = scored_classification(proba, np.asarray(label_class, dtype=np.int64))
    ids = sorted(predictions["model_id"].unique().to_list())
    used = registry.filter(pl.col("model_id").is_in(ids))
    train_seconds = sum(float(json.loads(m).get("train_seconds", 0.0)) if isinstance(m, str)
                        else float((m or {}).get("train_seconds", 0.0)) for m in used["metrics"])
    config = {"architecture": architecture, "signal": "edge_rule", "predictions": "predictions.oos",
              "horizon": horizon,
              "fold_rules": {mid: edge_rule_of(m, mid).as_config() for mid, m in zip(used["model_id"], used["metrics"])}}
    run = evaluate(architecture, symbol, interval, inputs, target, config, costs, risk, classification=clf,
                   model_ids=ids, family=MODEL_FAMILY)
    predicted = np.isfinite(proba).all(axis=1)
    run.metrics["first_test_index"] = float(np.argmax(predicted)) if predicted.any() else math.nan
    if predicted.any():  # the span from its first to its last predicted bar: the folds' test blocks
        run.metrics["test_start_ms"] = float(inputs.ts_ms[np.argmax(predicted)])
        run.metrics["test_end_ms"] = float(inputs.ts_ms[predicted.shape[0] - 1 - np.argmax(predicted[::-1])])
    run.bar_log_loss = per_bar_log_loss(proba, np.asarray(label_class, dtype=np.int64))
    run.metrics["selection_val_loss"] = selection_val_loss(used)
    run.metrics["predicted_bars"] = float(predicted.sum())
    run.metrics["train_seconds"] = train_seconds
    stable = {"architecture": architecture, "horizon": horizon, "family": MODEL_FAMILY,
              "costs": dataclasses.asdict(costs), "risk": dataclasses.asdict(risk)}
    return dataclasses.replace(run, run_id=make_run_id(architecture, symbol, interval, stable))


def model_runs_for_market(symbol: str, interval: str, inputs: EngineInputs, predictions: pl.DataFrame,
                          registry: pl.DataFrame, label_class: np.ndarray, costs: CostModel,
                          risk: RiskRules = RiskRules(), horizon: int = 1,
                          log: Callable[[str], None] = lambda _: None) -> list[BacktestRun]:
    """One run per architecture with predictions on this market (``registry`` has an ``architecture`` column)."""
    runs = []
    for (arch,), reg in registry.group_by("architecture", maintain_order=True):
        preds = predictions.filter(pl.col("model_id").is_in(reg["model_id"].to_list()))
        if preds.height == 0:
            log(f"{arch}: no predictions.oos rows for {symbol} {interval}; no backtest")
            continue
        runs.append(model_run(arch, symbol, interval, inputs, preds, reg, label_class, costs, risk, horizon))
    return runs


def run_model_backtests(warehouse, settings, horizon: int = 1,
                        log: Callable[[str], None] = print) -> tuple[list[BacktestRun], dict]:
    """Every architecture in ``models.registry`` on every (symbol, interval) of ``settings``: runs, PBO, stored.

    Each run's HTML report goes to ``$DATA_DIR/reports/models/`` (with the
    models-only ``comparison.html`` there; the full comparison is
    :func:`pipeline.backtest.comparison.run_comparison`).

    Candles, funding and labels are loaded as the baseline suite loads them,
    so models and baselines trade the same bars at the same costs.
    """
    from pipeline.core.costs import funding_per_bar
    from pipeline.backtest.engine import prepare_inputs
    from pipeline.backtest.evaluation import add_overfitting_statistics
    from pipeline.backtest.tables import store_runs
    from pipeline.market.stored import load_candles, load_funding
    from pipeline.features.labels import UNKNOWN_CLASS, load_labels

    registry = warehouse.query("select model_id, architecture, fold, cast(metrics as varchar) as metrics "
                               "from models.current order by architecture, fold")
    runs: list[BacktestRun] = []
    for symbol in settings.symbols:
        funding = load_funding(warehouse, symbol)
        costs = CostModel.from_settings(settings, symbol)  # the symbol's maintenance margin
        for interval in settings.intervals:
            candles = load_candles(warehouse, symbol, interval, settings.start)
            preds = warehouse.query("select model_id, ts, p_down, p_flat, p_up from predictions.oos "
                                    "where symbol = ? and interval = ? and model_id in "
                                    "(select model_id from models.current) order by ts", [symbol, interval])
            if candles.height == 0 or preds.height == 0:
                log(f"{symbol} {interval}: {candles.height} candles, {preds.height} predictions; no model backtest")
                continue
            ts_ms = candles["ts"].dt.epoch("ms").to_numpy()
            fund = funding_per_bar(ts_ms, funding["ts"].dt.epoch("ms").to_numpy(), funding["funding_rate"].to_numpy())
            inputs = prepare_inputs(ts_ms, *(candles[c].to_numpy() for c in ("open", "high", "low", "close", "volume")),
                                    fund)
            labels = candles.select("ts").join(load_labels(warehouse, symbol, interval, horizon)
                                               .select("ts", "label_class"), on="ts", how="left")
            cls = labels["label_class"].fill_null(UNKNOWN_CLASS).to_numpy().astype(np.int64)
            runs += model_runs_for_market(symbol, interval, inputs, preds, registry, cls, costs, horizon=horizon,
                                          log=log)
    pbo = add_overfitting_statistics(runs) if runs else {}
    if runs:
        from pathlib import Path

        from pipeline.backtest.reports import write_reports

        write_reports(runs, Path(settings.reports_dir) / "models", plotly_folder=Path(settings.reports_dir))
    written = store_runs(warehouse, runs)
    return runs, {"pbo": pbo, "rows_written": written}
