"""Run records: spot and perpetual benchmarks, gross beside net, and deflation over each family's own trials."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import GRID_SUMMARY, N_GRID_COLS, prepare_inputs, run_backtest, run_grid
from pipeline.backtest.metrics import bar_returns
from pipeline.backtest.risk import RiskRules
from pipeline.backtest.evaluation import add_overfitting_statistics, evaluate, run_market_baselines
from pipeline.core.positions import SignalRule, target_positions
from pipeline.backtest.strategies import ma_momentum_targets

BARS_PER_YEAR = 8760.0


def _inputs(market, funding_rate=0.0):
    c = market.candles
    n = c.height
    funding = np.where(np.arange(n) % 8 == 0, funding_rate, 0.0)
    return prepare_inputs(c["ts"].to_numpy(), *(c[k].to_numpy() for k in ("open", "high", "low", "close", "volume")),
                          funding)


def _psr_zero(equity, initial):
    """PSR(0) written out from Bailey & López de Prado (2012), independent of pipeline.backtest.overfitting."""
    r = bar_returns(equity, initial)
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r)
    kurt = stats.kurtosis(r, fisher=False)
    return stats.norm.cdf(sr * math.sqrt(r.size - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))


def test_spot_and_perpetual_buy_and_hold_side_by_side(market_factory):
    m = market_factory("BTCUSDT", 1200, 1)
    runs = {r.strategy: r for r in run_market_baselines("BTCUSDT", "60", _inputs(m, 0.0003), CostModel())}
    perp, spot = runs["buy_and_hold"], runs["buy_and_hold_spot"]
    assert perp.family == spot.family == runs["flat"].family == "benchmark"
    assert perp.config["market"] == "perpetual" and spot.config["market"] == "spot"
    assert perp.metrics["funding_paid"] > 0 and spot.metrics["funding_paid"] == 0.0
    assert spot.result.equity[-1] > perp.result.equity[-1]  # a long paying positive funding ends lower
    # without funding the two are the same account
    unfunded = {r.strategy: r for r in run_market_baselines("BTCUSDT", "60", _inputs(m), CostModel())}
    np.testing.assert_array_equal(unfunded["buy_and_hold"].result.equity, unfunded["buy_and_hold_spot"].result.equity)
    assert perp.metrics["gross_total_return"] == spot.metrics["gross_total_return"]
    assert "logistic_regression" not in runs  # no labelled features given: skipped


def test_gross_metrics_are_the_same_targets_without_costs(market_factory):
    m = market_factory("BTCUSDT", 1200, 2)
    inp = _inputs(m, 0.0002)
    target = ma_momentum_targets(inp.close, 6, 24)
    run = evaluate("ma_momentum", "BTCUSDT", "60", inp, target, {}, CostModel(), RiskRules())
    free = run_backtest(dataclasses.replace(inp, funding=np.zeros(inp.close.size)), target,
                        CostModel(taker_fee=0, maker_fee=0, slippage_bps=0), RiskRules())
    r = bar_returns(free.equity, free.initial_equity)
    assert run.metrics["gross_sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(BARS_PER_YEAR), rel=1e-12)
    assert run.metrics["gross_total_return"] == pytest.approx(free.equity[-1] / free.initial_equity - 1, rel=1e-12)
    assert run.metrics["gross_total_return"] > run.metrics["total_return"]  # dozens of trades paid for
    costless = evaluate("ma_momentum", "BTCUSDT", "60", dataclasses.replace(inp, funding=np.zeros(inp.close.size)),
                        target, {}, CostModel(taker_fee=0, maker_fee=0, slippage_bps=0), RiskRules())
    assert costless.metrics["gross_sharpe"] == costless.metrics["sharpe"]


def _strategy_runs(market_factory, seed=3):
    m = market_factory("BTCUSDT", 1500, seed)
    inp = _inputs(m)
    runs = run_market_baselines("BTCUSDT", "60", inp, CostModel())
    return inp, runs


def test_a_strategy_alone_gets_its_psr_and_benchmarks_get_psr_only(market_factory):
    inp, runs = _strategy_runs(market_factory)
    add_overfitting_statistics(runs)
    by = {r.strategy: r for r in runs}
    ma = by["ma_momentum"]
    assert ma.metrics["dsr_trials"] == 1 and ma.metrics["dsr_sharpe_variance"] == 0.0
    assert ma.metrics["deflated_sharpe"] == pytest.approx(_psr_zero(ma.result.equity, ma.result.initial_equity), rel=1e-12)
    assert ma.metrics["psr"] == ma.metrics["deflated_sharpe"]
    for name in ("buy_and_hold", "buy_and_hold_spot"):
        b = by[name]
        assert "deflated_sharpe" not in b.metrics and "dsr_trials" not in b.metrics
        assert b.metrics["psr"] == pytest.approx(_psr_zero(b.result.equity, b.result.initial_equity), rel=1e-12)
    assert math.isnan(by["flat"].metrics["psr"])  # no variance, no statistic


def test_a_degenerate_trial_in_another_family_changes_nothing(market_factory):
    inp, runs = _strategy_runs(market_factory)
    add_overfitting_statistics(runs)
    before = {r.strategy: dict(r.metrics) for r in runs}
    n = inp.close.size
    wild = evaluate("churn", "BTCUSDT", "60", inp, np.where(np.arange(n) % 2 == 0, 3.0, -3.0), {}, CostModel(),
                    RiskRules(), family="broken")
    runs2 = [*runs, wild]
    add_overfitting_statistics(runs2)
    for r in runs:
        for key in ("psr", "deflated_sharpe", "dsr_trials", "dsr_sharpe_variance"):
            a, b = before[r.strategy].get(key), r.metrics.get(key)
            assert (a is None and b is None) or a == b or (math.isnan(a) and math.isnan(b)), (r.strategy, key)
    assert wild.metrics["dsr_trials"] == 1


def test_runs_of_one_family_deflate_each_other(market_factory):
    m = market_factory("BTCUSDT", 1500, 4)
    inp = _inputs(m)
    members = [evaluate("ma_momentum", "BTCUSDT", "60", inp, ma_momentum_targets(inp.close, f, s),
                        {"fast": f, "slow": s}, CostModel(), RiskRules(), family="ma_momentum")
               for f, s in ((6, 24), (12, 48), (24, 96), (3, 12))]
    add_overfitting_statistics(members)
    srs = []
    for r in members:
        x = bar_returns(r.result.equity, r.result.initial_equity)
        srs.append(x.mean() / x.std(ddof=1))
    for r in members:
        assert r.metrics["dsr_trials"] == 4
        assert r.metrics["dsr_sharpe_variance"] == pytest.approx(np.var(srs, ddof=1), rel=1e-10)
        assert r.metrics["deflated_sharpe"] < r.metrics["psr"]


def test_the_grids_deflated_sharpe_falls_as_configurations_are_added(market_factory):
    m = market_factory("BTCUSDT", 2000, 5)
    inp = _inputs(m)
    rng = np.random.default_rng(6)
    p_up = rng.uniform(0.2, 0.6, inp.close.size)
    p_down = rng.uniform(0.2, 0.6, inp.close.size) * (1 - p_up)
    configs = np.zeros((64, N_GRID_COLS))
    configs[:, 0] = np.linspace(0.2, 0.55, 64)  # thresholds
    configs[:, 2] = 1.0  # fraction
    costs = CostModel()
    summary = run_grid(inp, p_down, p_up, configs, BARS_PER_YEAR, costs)
    trial_sr = summary[:, GRID_SUMMARY.index("sharpe")] / math.sqrt(BARS_PER_YEAR)  # per bar
    chosen = target_positions(p_down, p_up, SignalRule(float(configs[0, 0])))
    dsrs = []
    for k in (1, 4, 16, 64):
        run = evaluate("grid", "BTCUSDT", "60", inp, chosen, {"configs": k}, costs, RiskRules(), family="grid",
                       trial_sharpes=trial_sr[:k])
        add_overfitting_statistics([run])
        assert run.metrics["dsr_trials"] == k
        dsrs.append(run.metrics["deflated_sharpe"])
    assert dsrs[0] == pytest.approx(run.metrics["psr"], rel=1e-12)
    assert all(a > b for a, b in zip(dsrs, dsrs[1:])), dsrs
