"""Margin and liquidation: a hand-computed liquidation, equity >= 0 on adversarial paths, one loop for all runs."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import GRID_SUMMARY, N_GRID_COLS, prepare_inputs, run_backtest, run_grid
from pipeline.backtest.risk import RiskRules
from pipeline.core.positions import SIZINGS, SignalRule, target_positions

H = 3_600_000


def test_leveraged_long_liquidated_at_its_level_with_the_taker_fee():
    # 5x long from 10,000 at 100, no entry costs; bar 2's low 70 crosses the liquidation level
    o = np.array([100.0, 100.0, 95.0, 80.0])
    c = np.array([100.0, 96.0, 90.0, 80.0])
    h = np.maximum(o, c)
    lo = np.array([100.0, 95.0, 70.0, 80.0])
    inp = prepare_inputs(np.arange(4) * H, o, h, lo, c)
    costs = CostModel(taker_fee=0.00055, maker_fee=0.0, order_type="maker", slippage_bps=0.0,
                      maintenance_margin_rate=0.005)
    res = run_backtest(inp, [5.0, 5.0, 5.0, 5.0], costs, RiskRules(max_leverage=5.0))
    q = 500.0  # 5 * 10,000 / 100
    cash = 10_000.0 - q * 100.0
    p_liq = -cash / (q * (1 - 0.005))  # cash + q p = 0.005 q p
    assert 70.0 < p_liq < 90.0
    fee = q * p_liq * 0.00055
    expected = cash + q * p_liq - fee
    assert res.equity[2] == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(q * p_liq * (0.005 - 0.00055), abs=1e-9)
    assert res.equity[3] == res.equity[2]  # flat afterwards
    t = res.trades_table()
    assert t["exit_reason"].tolist() == ["liquidation"]
    assert t["exit_price"][0] == pytest.approx(p_liq, abs=1e-12)
    assert res.n_liquidations == 1 and res.summary[GRID_SUMMARY.index("n_liquidations")] == 1


def test_funding_drains_an_unleveraged_long_into_liquidation_not_below_zero():
    n = 40
    o = np.full(n, 100.0)
    inp = prepare_inputs(np.arange(n) * H, o, o, o, o, None, np.full(n, 0.05))  # 5 % funding every bar
    res = run_backtest(inp, np.ones(n), CostModel(slippage_bps=0.0))
    assert res.n_liquidations == 1
    assert np.all(res.equity >= 0)
    assert res.trades_table()["exit_reason"][-1] == "liquidation"


def _adversarial(n, seed):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.standard_t(2, n) * 0.03))
    o = np.r_[100.0, c[:-1]] * np.exp(rng.standard_t(2, n) * 0.02)  # gaps
    h = np.maximum(o, c) * (1 + rng.exponential(0.03, n))
    lo = np.minimum(o, c) * (1 - np.minimum(rng.exponential(0.03, n), 0.9))
    f = np.where(rng.uniform(size=n) < 0.2, rng.normal(0, 0.01, n), 0.0)
    return prepare_inputs(np.arange(n) * H, o, h, lo, c, rng.uniform(1, 10, n), f)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("execution", ["next_open", "close"])
def test_equity_never_below_zero_and_drawdown_never_below_minus_100(seed, execution):
    inp = _adversarial(600, seed)
    rng = np.random.default_rng(100 + seed)
    target = rng.choice([-20.0, -3.0, -1.0, 0.0, 1.0, 3.0, 20.0], 600)
    for lev in (1.0, 3.0, 50.0):
        res = run_backtest(inp, target, CostModel(impact_coef=0.5), RiskRules(max_leverage=lev), execution)
        assert np.all(res.equity >= 0), (lev, res.equity.min())
        peak = np.maximum.accumulate(np.r_[res.initial_equity, res.equity])
        assert np.all(np.r_[res.initial_equity, res.equity] / peak - 1 >= -1)
        assert res.summary[2] >= -1


def test_single_run_and_grid_agree_bit_for_bit_on_liquidating_paths():
    inp = _adversarial(800, 42)
    rng = np.random.default_rng(7)
    p_up = rng.uniform(0, 0.9, 800)
    p_down = (1 - p_up) * rng.uniform(0, 1, 800)
    configs = np.zeros((6, N_GRID_COLS))
    configs[:, 0] = [0.3, 0.4, 0.3, 0.5, 0.35, 0.3]
    configs[:, 2] = [5.0, 8.0, 3.0, 10.0, 6.0, 4.0]
    configs[:, 3] = [0.0, 0.05, 0.0, 0.0, 0.1, 0.0]
    costs = CostModel(impact_coef=0.01)
    grid = run_grid(inp, p_down, p_up, configs, 8760.0, costs, max_leverage=10.0)
    assert grid[:, GRID_SUMMARY.index("n_liquidations")].sum() >= 3  # the paths do liquidate
    for k, cfg in enumerate(configs):
        target = target_positions(p_down, p_up, SignalRule(cfg[0], SIZINGS[int(cfg[1])], cfg[2]))
        res = run_backtest(inp, target, costs, RiskRules(stop_loss_pct=cfg[3], max_leverage=10.0))
        np.testing.assert_array_equal(res.summary, grid[k])
        assert res.summary[0] == res.equity[-1] / 10_000 - 1
        assert res.n_liquidations == grid[k, GRID_SUMMARY.index("n_liquidations")]
