"""The grid runner (shared target rows, summary on the fly) against single runs of each configuration.

The single run and the grid run the same bar loop and order kernel, so each
grid row must equal ``run_backtest(...).summary`` bit for bit, for every risk
rule, sizing, both executions, impact and the drawdown limits.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import N_GRID_COLS, prepare_inputs, run_backtest, run_grid
from pipeline.core.positions import SIZINGS, SignalRule, target_positions
from pipeline.backtest.risk import RiskRules

H = 3_600_000


def _market(n, seed):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[100.0, c[:-1]] * np.exp(rng.normal(0, 0.002, n))
    h = np.maximum(o, c) * (1 + rng.exponential(0.004, n))
    lo = np.minimum(o, c) * (1 - rng.exponential(0.004, n))
    v = rng.uniform(10, 100, n)
    f = np.where(np.arange(n) % 8 == 0, rng.normal(0.0001, 0.0002, n), 0.0)
    # persistent probabilities, like a model's outputs on overlapping windows
    z = np.cumsum(rng.normal(0, 0.3, (2, n)), axis=1) * 0.3
    p_up = 0.1 + 0.8 / (1 + np.exp(-np.sin(z[0])))
    p_down = (1 - p_up) / (1 + np.exp(-z[1] % 3))
    conf = rng.uniform(0, 1, n)
    return prepare_inputs(np.arange(n) * H, o, h, lo, c, v, f), p_down, p_up, conf


def _configs(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for thr in (0.3, 0.45, 0.6):
        for code, frac in ((0, 0.5), (0, 1.5), (1, 1.0), (2, 1.0)):
            for sl, sl_atr, trail, tp, hold in ((0, 0, 0, 0, 0), (0.02, 0, 0, 0, 0), (0, 2.0, 0, 0, 0),
                                                (0, 0, 3.0, 0, 0), (0.01, 1.5, 2.0, 0.03, 20), (0, 0, 0, 0.02, 5)):
                rows.append([thr, code, frac, sl, sl_atr, trail, tp, hold])
    configs = np.array(rows, dtype=float)
    assert configs.shape[1] == N_GRID_COLS
    return configs[rng.permutation(len(configs))]  # signals interleaved: rows must come back in order


@pytest.mark.parametrize("execution", ["next_open", "close"])
@pytest.mark.parametrize("limits", [(0.0, 0.0), (0.01, 0.03)])
def test_fast_grid_equals_the_plain_path_bit_for_bit(execution, limits):
    inp, p_down, p_up, conf = _market(3000, 11)
    configs = _configs(12)
    costs = CostModel(impact_coef=0.02)
    kw = dict(confidence=conf, min_confidence=0.2, kelly_payoff=1.3, half_kelly=False, kelly_cap=0.4,
              daily_drawdown_limit=limits[0], weekly_drawdown_limit=limits[1], execution=execution)
    fast = run_grid(inp, p_down, p_up, configs, 8760.0, costs, **kw)
    ref = np.empty_like(fast)
    for k, cfg in enumerate(configs):
        rule = SignalRule(cfg[0], SIZINGS[int(cfg[1])], cfg[2], min_confidence=0.2, kelly_payoff=1.3,
                          half_kelly=False, kelly_cap=0.4)
        risk = RiskRules(stop_loss_pct=cfg[3], stop_loss_atr=cfg[4], trailing_atr=cfg[5], take_profit_pct=cfg[6],
                         max_holding_bars=int(cfg[7]), daily_drawdown_limit=limits[0],
                         weekly_drawdown_limit=limits[1])
        ref[k] = run_backtest(inp, target_positions(p_down, p_up, rule, conf), costs, risk, execution).summary
    # the workload exercises what it claims to: trades, exposure and a real spread of outcomes
    assert np.all(ref[:, 3] > 0) and np.unique(ref[:, 0]).size > len(configs) // 2
    np.testing.assert_array_equal(fast, ref)


def test_grid_rejects_an_unknown_sizing_code():
    inp, p_down, p_up, _ = _market(200, 1)
    configs = np.zeros((3, N_GRID_COLS))
    configs[:, 0] = 0.5
    configs[:, 2] = 1.0
    configs[2, 1] = 1.5
    with pytest.raises(ValueError, match=r"configs\[2, 1\]=1.5.*sizing code"):
        run_grid(inp, p_down, p_up, configs, 8760.0)
