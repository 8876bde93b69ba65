"""Model backtests from predictions.oos rows: flat before the first test bar, per-fold rules, money on a real signal,
nothing on noise."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import prepare_inputs
from pipeline.backtest.model_backtests import MODEL_FAMILY, binomial_p_value, model_runs_for_market, model_targets
from pipeline.backtest.evaluation import add_overfitting_statistics
from pipeline.core.positions import class_mean_returns, round_trip_cost_of

H = 3_600_000
START_MS = 1_704_067_200_000
N, FIRST_TEST, FOLDS = 3000, 1200, 3


def market(seed: int):
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.006, N)
    close = 40_000 * np.exp(np.cumsum(r))
    open_ = np.r_[40_000.0, close[:-1]]
    ts = START_MS + np.arange(N) * H
    inputs = prepare_inputs(ts, open_, np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999, close,
                            np.full(N, 100.0))
    # label of bar t: the move from the next open to the open after (what next_open execution earns)
    fwd = np.r_[open_[2:] / open_[1:-1] - 1.0, np.nan, np.nan]
    cls = np.where(np.isnan(fwd), -1, np.where(fwd > 0.001, 2, np.where(fwd < -0.001, 0, 1)))
    return inputs, fwd, cls


def predictions(arch: str, cls: np.ndarray, fwd: np.ndarray, skill: float, seed: int):
    """Folds over [FIRST_TEST, N): probabilities that know the true class with weight ``skill``."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(FIRST_TEST, N - 2, FOLDS + 1).astype(int)
    rows, reg = [], []
    for k in range(FOLDS):
        mid = f"{arch}-f{k}"
        idx = np.arange(edges[k], edges[k + 1])
        noise = rng.dirichlet(np.ones(3), idx.size)
        onehot = np.eye(3)[np.clip(cls[idx], 0, 2)]
        p = (1 - skill) * noise + skill * onehot
        rows.append(pl.DataFrame({"model_id": mid, "ts": pl.Series((START_MS + idx * H) * 1000).cast(pl.Datetime("us")),
                                  "p_down": p[:, 0], "p_flat": p[:, 1], "p_up": p[:, 2]}))
        train = np.arange(0, edges[k] - 2)
        rule = {"class_returns": list(class_mean_returns(fwd[train], cls[train])),
                "round_trip_cost": round_trip_cost_of(CostModel()), "margin": 0.0}
        reg.append({"model_id": mid, "architecture": arch, "metrics": json.dumps({"edge_rule": rule, "train_seconds": 1.5})})
    return pl.concat(rows), pl.DataFrame(reg)


def test_flat_before_first_test_bar_and_every_prediction_placed():
    inputs, fwd, cls = market(0)
    preds, reg = predictions("tcn", cls, fwd, 0.6, 1)
    target, proba = model_targets(inputs.ts_ms, preds, reg)
    assert np.all(target[:FIRST_TEST] == 0.0)
    assert np.isnan(proba[:FIRST_TEST]).all()
    assert np.isfinite(proba).all(axis=1).sum() == preds.height
    assert np.abs(target[FIRST_TEST:]).max() == 1.0


def test_overlapping_folds_and_unknown_models_fail_clearly():
    inputs, fwd, cls = market(0)
    preds, reg = predictions("tcn", cls, fwd, 0.6, 1)
    with pytest.raises(ValueError, match="folds overlap"):
        model_targets(inputs.ts_ms, pl.concat([preds, preds.with_columns(model_id=pl.lit("tcn-f1"))]), reg)
    with pytest.raises(ValueError, match="does not know"):
        model_targets(inputs.ts_ms, preds, reg.filter(pl.col("model_id") != "tcn-f0"))
    with pytest.raises(ValueError, match="no edge_rule"):
        model_targets(inputs.ts_ms, preds, reg.with_columns(metrics=pl.lit("{}")))


def test_binomial_p_value_matches_the_sum():
    from math import comb

    n, k, p = 40, 25, 0.45
    direct = sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
    assert binomial_p_value(k, n, p) == pytest.approx(direct, rel=1e-10)


def test_a_skilled_model_earns_after_costs_and_a_blind_one_is_not_deflated_above_095():
    inputs, fwd, cls = market(3)
    skilled = predictions("wavenet", cls, fwd, 0.5, 4)
    blind = [predictions(a, cls, fwd, 0.0, 10 + i) for i, a in enumerate(("tcn", "resnet1d", "inception"))]
    preds = pl.concat([skilled[0]] + [b[0] for b in blind])
    reg = pl.concat([skilled[1]] + [b[1] for b in blind])
    runs = model_runs_for_market("BTCUSDT", "60", inputs, preds, reg, cls, CostModel())
    assert [r.strategy for r in runs] == ["wavenet", "tcn", "resnet1d", "inception"]
    add_overfitting_statistics(runs)
    by = {r.strategy: r for r in runs}
    assert all(r.family == MODEL_FAMILY and r.metrics["dsr_trials"] == 4 for r in runs)
    w = by["wavenet"].metrics
    assert w["total_return"] > 0 and w["fees_paid"] > 0
    assert w["clf_accuracy"] > w["clf_majority_accuracy"] and w["clf_binomial_p"] < 0.01
    assert w["train_seconds"] == pytest.approx(4.5)
    assert by["wavenet"].result.position[:FIRST_TEST].max() == 0.0
    for a in ("tcn", "resnet1d", "inception"):
        assert by[a].metrics["deflated_sharpe"] < 0.95
        assert by[a].metrics["clf_binomial_p"] > 0.01
    # a retrain (new rules, same architecture and market) replaces the run: same run id
    again = model_runs_for_market("BTCUSDT", "60", inputs, skilled[0], skilled[1].with_columns(
        metrics=pl.col("metrics").str.replace('"margin": 0.0', '"margin": 0.001')), cls, CostModel())
    assert again[0].run_id == by["wavenet"].run_id
    assert again[0].config["fold_rules"]["wavenet-f0"]["margin"] == 0.001


def test_run_model_backtests_reads_the_warehouse_and_stores_the_same_runs(tmp_path):
    from pipeline.backtest.model_backtests import run_model_backtests
    from pipeline.config import Settings
    from pipeline.market.schemas import CANDLE_SCHEMA
    from pipeline.warehouse import Warehouse

    inputs, fwd, cls = market(5)
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    ts = pl.Series(inputs.ts_ms * 1000).cast(pl.Datetime("us"))
    wh.replace_rows("raw.candles", pl.DataFrame({
        "symbol": "BTCUSDT", "interval": "60", "ts": ts, "open": inputs.open, "high": inputs.high, "low": inputs.low,
        "close": inputs.close, "volume": inputs.volume, "turnover": None, "source": "test"}).cast(CANDLE_SCHEMA), "true")
    preds, reg = predictions("wavenet", cls, fwd, 0.5, 4)
    wh.replace_rows("predictions.oos", preds.with_columns(symbol=pl.lit("BTCUSDT"), interval=pl.lit("60")), "true")
    wh.replace_rows("models.registry", reg.with_columns(fold=pl.int_range(pl.len()).cast(pl.Int32)), "true")
    with wh.connect() as con:
        con.execute("create schema if not exists features")
        con.execute("create table features.labels (symbol varchar, interval varchar, ts timestamp, horizon integer, "
                    "fwd_return double, direction integer, fwd_volatility double)")
        con.register("lab", pl.DataFrame({"ts": ts, "fwd_return": fwd,
                                          "direction": pl.Series(np.where(cls < 0, None, cls - 1).tolist(), dtype=pl.Int32)}))
        con.execute("insert into features.labels select 'BTCUSDT', '60', ts, 1, fwd_return, direction, null from lab")
    settings = Settings(data_dir=tmp_path, symbols=("BTCUSDT",), start="2024-01-01")
    runs, info = run_model_backtests(wh, settings, log=lambda _: None)
    direct = model_runs_for_market("BTCUSDT", "60", inputs, preds, reg, cls, CostModel())
    assert [r.run_id for r in runs] == [r.run_id for r in direct]
    np.testing.assert_allclose(runs[0].result.equity, direct[0].result.equity)
    stored = wh.query("select model_ids from backtest.runs")
    assert sorted(stored["model_ids"][0].to_list()) == sorted(reg["model_id"].to_list())
    assert info["rows_written"]["backtest.equity"] == N
