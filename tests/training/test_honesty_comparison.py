"""The comparison table: a row per run and pooled rows whose figures follow from the runs' equity curves."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backtest.comparison import comparison_markdown, comparison_table, pooled_returns
from pipeline.core.costs import CostModel
from pipeline.backtest.engine import prepare_inputs
from pipeline.backtest.metrics import bar_returns
from pipeline.backtest.model_backtests import MODEL_FAMILY
from pipeline.backtest.risk import RiskRules
from pipeline.backtest.evaluation import add_overfitting_statistics, evaluate

H = 3_600_000


def runs_for(symbol: str, seed: int):
    rng = np.random.default_rng(seed)
    n = 800
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.005, n)))
    o = np.r_[100.0, close[:-1]]
    inp = prepare_inputs(1_704_067_200_000 + np.arange(n) * H, o, np.maximum(o, close) * 1.001,
                         np.minimum(o, close) * 0.999, close, np.full(n, 10.0))
    return [evaluate(a, symbol, "60", inp, np.sign(rng.normal(size=n)) * (rng.random(n) > 0.9),
                     {"a": a}, CostModel(), RiskRules(),
                     family=MODEL_FAMILY) for a in ("tcn", "wavenet")]


def test_pooled_rows_follow_from_the_symbol_runs():
    runs = runs_for("BTCUSDT", 1) + runs_for("ETHUSDT", 2)
    pbo = add_overfitting_statistics(runs)
    table = comparison_table(runs, pbo)
    assert table.height == 6
    pooled = table.filter(symbol="pooled")
    assert sorted(pooled["strategy"].to_list()) == ["tcn", "wavenet"]
    tcn = [r for r in runs if r.strategy == "tcn"]
    rets, _ = pooled_returns(tcn)
    expected = (bar_returns(tcn[0].result.equity, 10_000) + bar_returns(tcn[1].result.equity, 10_000)) / 2
    np.testing.assert_allclose(rets, expected)
    assert pooled.filter(strategy="tcn")["dsr_trials"][0] == 2
    assert 0.0 <= pooled["pbo"][0] <= 1.0
    per_symbol = table.filter(symbol="BTCUSDT", strategy="tcn")
    assert per_symbol["sharpe"][0] == pytest.approx(tcn[0].metrics["sharpe"])
    md = comparison_markdown(table)
    assert md.count("\n") == 7 and "pooled" in md
