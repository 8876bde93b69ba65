"""Hand-computed engine cases (fills, fees, slippage, funding, stops, limits), invariants and bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.core.costs import CostModel, funding_per_bar
from pipeline.backtest.engine import (
    GRID_SUMMARY,
    N_GRID_COLS,
    prepare_inputs,
    run_backtest,
    run_grid,
)
from pipeline.backtest.metrics import sharpe_ratio, bar_returns
from pipeline.backtest.risk import RiskRules, average_true_range
from pipeline.core.positions import SignalRule, target_positions

H = 3_600_000
DAY = 86_400_000


def bars(open_, close, high=None, low=None, start_ms=0, step_ms=H, volume=None, funding=None):
    o = np.asarray(open_, dtype=float)
    c = np.asarray(close, dtype=float)
    h = np.maximum(o, c) if high is None else np.asarray(high, dtype=float)
    lo = np.minimum(o, c) if low is None else np.asarray(low, dtype=float)
    ts = start_ms + np.arange(o.size, dtype=np.int64) * step_ms
    return prepare_inputs(ts, o, h, lo, c, volume, funding)


def no_costs(**kw):
    return CostModel(taker_fee=0.0, maker_fee=0.0, slippage_bps=0.0, **kw)


def test_long_round_trip_to_the_cent():
    inp = bars([100, 100, 110, 120], [100, 105, 115, 120])
    costs = CostModel(taker_fee=0.001, slippage_bps=10)
    res = run_backtest(inp, [1.0, 1.0, 0.0, 0.0], costs)
    # bar 1 open: full size at 100 * 1.001 = 100.1 with the fee must fit 10,000: q = 10,000 / (100.1 * 1.001)
    q = 10_000 / (100.1 * 1.001)
    assert res.equity[0] == pytest.approx(10_000.0, abs=1e-9)
    assert res.equity[1] == pytest.approx(q * 105, abs=1e-9)
    assert res.equity[2] == pytest.approx(q * 115, abs=1e-9)
    # bar 3 open: sell q at 120 * 0.999 = 119.88, fee 0.1 %
    assert res.equity[3] == pytest.approx(q * 119.88 * 0.999, abs=1e-9)
    assert res.fees_paid == pytest.approx(q * 100.1 * 0.001 + q * 119.88 * 0.001, abs=1e-9)
    t = res.trades_table()
    assert t["side"].tolist() == [1]
    assert t["entry_price"][0] == pytest.approx(100.1)
    assert t["exit_price"][0] == pytest.approx(119.88)
    assert t["pnl"][0] == pytest.approx(q * 119.88 * 0.999 - 10_000, abs=1e-9)
    assert t["entry_i"][0] == 1 and t["exit_i"][0] == 3
    assert t["exit_reason"][0] == "signal"
    assert res.position[1] == pytest.approx(q * 105 / res.equity[1])
    assert np.all(res.position <= 1.0 + 1e-12)  # never more than the equity


def test_execution_at_close_uses_the_same_bar():
    inp = bars([100, 100, 110, 120], [100, 105, 115, 120])
    res = run_backtest(inp, [1.0, 1.0, 0.0, 0.0], no_costs(), execution="close")
    # buy 100 at close[0]=100, sell at close[2]=115
    assert res.equity[2] == pytest.approx(10_000 + 100 * 15)
    assert res.equity[3] == pytest.approx(11_500)


def test_funding_long_pays_short_receives():
    funding = [0.0, 0.0, 0.0001, 0.0002]
    inp = bars([100, 100, 110, 120], [100, 105, 115, 120], funding=funding)
    long_ = run_backtest(inp, [1.0, 1.0, 0.0, 0.0], no_costs())
    # bar 2 open: 100 units * 110 * 0.0001 = 1.1; bar 3 open: 100 * 120 * 0.0002 = 2.4
    assert long_.equity[3] == pytest.approx(10_000 + 100 * 20 - 1.1 - 2.4, abs=1e-9)
    assert long_.funding_paid == pytest.approx(3.5, abs=1e-12)
    assert long_.trades_table()["funding"][0] == pytest.approx(-3.5, abs=1e-12)
    short = run_backtest(inp, [-0.5, -0.5, 0.0, 0.0], no_costs())
    # short 50 units at 100: receives 50 * 110 * 0.0001 + 50 * 120 * 0.0002 = 0.55 + 1.2
    assert short.funding_paid == pytest.approx(-1.75, abs=1e-12)
    assert short.equity[3] == pytest.approx(10_000 - 50 * 20 + 1.75, abs=1e-9)


def test_funding_alignment_to_bars():
    bar_ts = np.arange(6, dtype=np.int64) * H
    settle = np.array([-H, 0, 2 * H, 2 * H + H // 2, 5 * H, 7 * H], dtype=np.int64)
    rates = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) * 1e-4
    out = funding_per_bar(bar_ts, settle, rates)
    # at an open -> that bar; inside bar 2 -> paid at bar 3's open; before / after the range -> dropped
    np.testing.assert_allclose(out, np.array([2, 0, 3, 4, 0, 5]) * 1e-4)


def test_fixed_stop_fills_at_stop_or_gapped_open_never_better():
    slip = CostModel(taker_fee=0.0, slippage_bps=10)
    # entry at bar 1 open 100, stop 5% -> 95; bar 2 trades through 95 from an open of 99
    inp = bars([100, 100, 99, 96, 96], [100, 98, 96, 96, 96], low=[100, 96, 94, 95.5, 96])
    res = run_backtest(inp, [1, 1, 1, 1, 1], slip, RiskRules(stop_loss_pct=0.05))
    t = res.trades_table()
    assert t["exit_reason"][0] == "stop_loss" and t["exit_i"][0] == 2
    assert t["exit_price"][0] == pytest.approx(95 * 0.999)
    # the signal is still long: no re-entry until it changes
    assert t["side"].size == 1 and np.all(res.position[2:] == 0)
    # gap: bar 2 opens at 93, below the stop -> filled at the open
    gap = bars([100, 100, 93, 96], [100, 98, 96, 96], low=[100, 96, 92, 95])
    t = run_backtest(gap, [1, 1, 1, 1], slip, RiskRules(stop_loss_pct=0.05)).trades_table()
    assert t["exit_price"][0] == pytest.approx(93 * 0.999) and t["exit_i"][0] == 2
    # short stop above the entry
    sh = bars([100, 100, 104, 100], [100, 103, 100, 100], high=[100, 104, 106, 100])
    t = run_backtest(sh, [-1, -1, -1, -1], slip, RiskRules(stop_loss_pct=0.05)).trades_table()
    assert t["exit_price"][0] == pytest.approx(105 * 1.001) and t["side"][0] == -1


def test_reentry_after_the_signal_changes():
    inp = bars([100, 100, 99, 96, 96, 96], [100, 98, 96, 96, 96, 97], low=[100, 96, 94, 95.5, 96, 96])
    res = run_backtest(inp, [1, 1, 1, 0, 1, 1], no_costs(), RiskRules(stop_loss_pct=0.05))
    t = res.trades_table()
    assert t["exit_reason"].tolist() == ["stop_loss", "open"]
    assert t["entry_i"][1] == 5  # target back to long at bar 4 -> entry at bar 5's open


def test_trailing_atr_stop_from_the_peak():
    inp = bars([100, 100, 103, 100], [100, 103, 101, 100], high=[100, 104, 103.5, 100], low=[100, 99, 100.5, 100])
    inp = dataclasses.replace(inp, atr=np.full(4, 2.0))
    res = run_backtest(inp, [1, 1, 1, 1], CostModel(taker_fee=0.0, slippage_bps=10), RiskRules(trailing_atr=1.5))
    t = res.trades_table()
    # bar 1: stop 100 - 3 = 97 not hit, peak -> 104; bar 2: stop 104 - 3 = 101, low 100.5 -> exit at 101
    assert t["exit_reason"][0] == "stop_loss" and t["exit_i"][0] == 2
    assert t["exit_price"][0] == pytest.approx(101 * 0.999)
    # fixed ATR stop: entry 100 - 1.5 * 2 = 97 is not hit on the same path
    res2 = run_backtest(inp, [1, 1, 1, 1], no_costs(), RiskRules(stop_loss_atr=1.5))
    assert res2.trades_table()["exit_reason"].tolist() == ["open"]


def test_take_profit_and_max_holding():
    inp = bars([100, 100, 105, 108, 108], [100, 104, 108, 108, 108], high=[100, 105, 111, 109, 108])
    t = run_backtest(inp, [1] * 5, CostModel(taker_fee=0.0, slippage_bps=10),
                     RiskRules(take_profit_pct=0.10)).trades_table()
    assert t["exit_reason"][0] == "take_profit" and t["exit_i"][0] == 2
    assert t["exit_price"][0] == pytest.approx(110 * 0.999)
    t = run_backtest(inp, [1] * 5, no_costs(), RiskRules(max_holding_bars=2)).trades_table()
    assert t["exit_reason"][0] == "max_hold" and t["exit_i"][0] == 3 and t["exit_price"][0] == pytest.approx(108)


def test_daily_drawdown_halves_the_size_until_the_next_day():
    n = 30
    o = np.full(n, 100.0)
    c = np.full(n, 100.0)
    c[1] = 90.0  # -10 % on day 0
    o[2:] = 90.0
    c[2:] = 90.0
    res = run_backtest(bars(o, c), np.ones(n), no_costs(), RiskRules(daily_drawdown_limit=0.05))
    assert res.position[1] == pytest.approx(1.0)
    assert res.position[2] == pytest.approx(0.5)  # halved at bar 2's open, the same day
    assert res.position[23] == pytest.approx(0.5)
    assert res.position[24] == pytest.approx(1.0)  # a new UTC day restores the full size


def test_weekly_drawdown_stops_trading_until_next_week():
    # daily bars from Monday 1970-01-05; a 15 % loss on Tuesday
    n = 15
    o = np.full(n, 100.0)
    c = np.full(n, 100.0)
    c[1] = 85.0
    o[2:] = 85.0
    c[2:] = 85.0
    res = run_backtest(bars(o, c, start_ms=4 * DAY, step_ms=DAY), np.ones(n), no_costs(),
                       RiskRules(weekly_drawdown_limit=0.10))
    assert np.all(res.position[2:7] == 0.0)  # Wednesday .. Sunday: flat
    assert res.position[7] == pytest.approx(1.0)  # next Monday
    assert res.trades_table()["exit_reason"][0] == "weekly_stop"


def _random_market(n, seed):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[100.0, c[:-1]] * np.exp(rng.normal(0, 0.001, n))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.01, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.01, n))
    v = rng.uniform(10, 100, n)
    f = np.where(np.arange(n) % 8 == 0, rng.normal(0.0001, 0.0002, n), 0.0)
    return o, h, lo, c, v, f


RICH_RISK = RiskRules(stop_loss_pct=0.02, trailing_atr=3.0, take_profit_pct=0.04, max_holding_bars=30,
                      daily_drawdown_limit=0.03, weekly_drawdown_limit=0.08)


def test_trade_pnl_adds_up_to_the_equity_change():
    o, h, lo, c, v, f = _random_market(3000, 1)
    inp = prepare_inputs(np.arange(3000) * H, o, h, lo, c, v, f)
    rng = np.random.default_rng(2)
    target = np.round(rng.uniform(-1, 1, 3000) * 2) / 2
    res = run_backtest(inp, target, CostModel(impact_coef=0.05), RICH_RISK)
    t = res.trades_table()
    assert set(t["exit_reason"]) >= {"signal", "stop_loss", "take_profit"}
    assert t["pnl"].sum() == pytest.approx(res.equity[-1] - res.initial_equity, rel=1e-9)
    assert t["fees"].sum() == pytest.approx(res.fees_paid, rel=1e-9)
    assert -t["funding"].sum() == pytest.approx(res.funding_paid, rel=1e-9, abs=1e-9)


def test_future_prices_do_not_move_the_past():
    n, t0 = 1500, 900
    o, h, lo, c, v, f = _random_market(n, 3)
    ts = np.arange(n) * H
    target = np.sign(np.r_[0.0, np.diff(c)])  # a signal from the bar's own close
    base = run_backtest(prepare_inputs(ts, o, h, lo, c, v, f), target, CostModel(), RICH_RISK)
    c2, o2, h2, lo2 = c.copy(), o.copy(), h.copy(), lo.copy()
    scale = np.exp(np.random.default_rng(9).normal(0, 0.05, n - t0 - 1))
    for arr in (c2, o2, h2, lo2):
        arr[t0 + 1 :] *= scale
    target2 = target.copy()
    target2[t0:] = -target2[t0:]  # the signal at t0 acts at t0 + 1 only
    moved = run_backtest(prepare_inputs(ts, o2, h2, lo2, c2, v, f), target2, CostModel(), RICH_RISK)
    np.testing.assert_array_equal(base.equity[: t0 + 1], moved.equity[: t0 + 1])
    assert not np.array_equal(base.equity[t0 + 1 :], moved.equity[t0 + 1 :])


def test_atr_matches_talib():
    talib = pytest.importorskip("talib")
    o, h, lo, c, v, f = _random_market(500, 4)
    np.testing.assert_allclose(average_true_range(h, lo, c, 14), talib.ATR(h, lo, c, 14), rtol=1e-10, equal_nan=True)


def test_grid_matches_single_runs():
    n = 2000
    o, h, lo, c, v, f = _random_market(n, 5)
    inp = prepare_inputs(np.arange(n) * H, o, h, lo, c, v, f)
    rng = np.random.default_rng(6)
    p_up = rng.uniform(0, 0.8, n)
    p_down = (1 - p_up) * rng.uniform(0, 1, n)
    configs = np.zeros((4, N_GRID_COLS))
    configs[:, 0] = [0.4, 0.45, 0.5, 0.55]
    configs[:, 1] = [0, 1, 2, 0]
    configs[:, 2] = [0.5, 1.0, 1.0, 0.8]
    configs[:, 3] = [0.0, 0.02, 0.0, 0.01]
    configs[:, 5] = [0.0, 0.0, 2.0, 0.0]
    configs[:, 7] = [0, 0, 0, 12]
    costs = CostModel(impact_coef=0.01)
    out = run_grid(inp, p_down, p_up, configs, 8760.0, costs)
    sizing = ["fixed", "confidence", "kelly"]
    for k, cfg in enumerate(configs):
        rule = SignalRule(threshold=cfg[0], sizing=sizing[int(cfg[1])], fraction=cfg[2])
        risk = RiskRules(stop_loss_pct=cfg[3], trailing_atr=cfg[5], max_holding_bars=int(cfg[7]))
        res = run_backtest(inp, target_positions(p_down, p_up, rule), costs, risk)
        summary = dict(zip(GRID_SUMMARY, out[k]))
        assert summary["total_return"] == pytest.approx(res.equity[-1] / 10_000 - 1, rel=1e-12)
        assert summary["n_trades"] == res.n_trades
        assert summary["fees_paid"] == pytest.approx(res.fees_paid, rel=1e-12)
        assert summary["sharpe"] == pytest.approx(sharpe_ratio(bar_returns(res.equity, 10_000), 8760), rel=1e-8)


def test_signal_rule_and_sizing():
    p_up = np.array([0.7, 0.3, 0.5, 0.45, 0.6])
    p_down = np.array([0.2, 0.6, 0.5, 0.1, 0.3])
    np.testing.assert_array_equal(target_positions(p_down, p_up, SignalRule(0.5)), [1, -1, 0, 0, 1])
    np.testing.assert_allclose(target_positions(p_down, p_up, SignalRule(0.5, "confidence", 0.5)),
                               [0.35, -0.3, 0, 0, 0.3])
    # half Kelly with b = 1: (p - q) / 2, capped at 0.25
    np.testing.assert_allclose(target_positions(p_down, p_up, SignalRule(0.5, "kelly")), [0.25, -0.15, 0, 0, 0.15])
    np.testing.assert_allclose(target_positions(p_down, p_up, SignalRule(0.5, "kelly", half_kelly=False, kelly_cap=1.0)),
                               [0.5, -0.3, 0, 0, 0.3])
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.2])
    np.testing.assert_array_equal(target_positions(p_down, p_up, SignalRule(0.5, min_confidence=0.5), conf),
                                  [1, -1, 0, 0, 0])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"close": np.array([100.0, 0.0, 100.0])}, r"close\[1\]=0\.0 at ts=.* not a positive finite price"),
        ({"open": np.array([100.0, -1.0, 100.0])}, r"open\[1\]"),
        ({"high": np.array([100.0, 100.0])}, r"high has 2 values but ts / open have 3"),
        ({"ts": np.array([0, H, H])}, r"ts\[1\].*not after the previous ts"),
        ({"low": np.array([100.0, 101.0, 100.0])}, r"low\[1\].*above min\(open, close\)"),
        ({"volume": np.array([1.0, np.nan, 1.0])}, r"volume\[1\]"),
    ],
)
def test_bad_candles_name_the_input(change, message):
    args = dict(ts=np.arange(3) * H, open=np.full(3, 100.0), high=np.full(3, 100.0), low=np.full(3, 100.0),
                close=np.full(3, 100.0), volume=np.ones(3))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        prepare_inputs(**args)


def test_bad_targets_and_probabilities_and_empty():
    inp = bars([100, 100, 100], [100, 100, 100])
    with pytest.raises(ValueError, match=r"target\[2\]=nan"):
        run_backtest(inp, [0.0, 1.0, np.nan])
    with pytest.raises(ValueError, match=r"target has 2 values"):
        run_backtest(inp, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"p_up\[1\]=nan is not a probability"):
        target_positions(np.zeros(3), np.array([0.1, np.nan, 0.2]))
    with pytest.raises(ValueError, match=r"p_down has shape \(2,\)"):
        target_positions(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="empty series"):
        prepare_inputs(np.array([], dtype=np.int64), [], [], [], [])
    with pytest.raises(ValueError, match="execution='later'"):
        run_backtest(inp, [0, 0, 0], execution="later")
