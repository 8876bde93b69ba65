"""The cost-aware edge rule: expected move, entry beyond the round trip, holding, fitting on fit rows only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.costs import CostModel
from pipeline.core.positions import (EdgeRule, class_mean_returns, edge_net_pnl, edge_targets, expected_move,
                                       fit_edge_rule, round_trip_cost_of)


def _reference_targets(proba, rule):
    """Plain-Python statement of the rule, bar by bar."""
    out, side = [], 0.0
    for row in proba:
        if np.isnan(row).all():
            side = 0.0
        else:
            m = sum(float(p) * r for p, r in zip(row, rule.class_returns))
            if side * m < 0:
                side = 0.0
            if side == 0.0:
                if m > rule.round_trip_cost + rule.margin:
                    side = 1.0
                elif rule.allow_short and m < -(rule.round_trip_cost + rule.margin):
                    side = -1.0
        out.append(side * rule.fraction)
    return np.array(out)


def _random_proba(n, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 3))
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_expected_move_is_probability_weighted_class_return():
    p = _random_proba(50, 0)
    r = (-0.01, 0.0005, 0.012)
    np.testing.assert_allclose(expected_move(p, r), p[:, 0] * r[0] + p[:, 1] * r[1] + p[:, 2] * r[2], rtol=0, atol=1e-15)
    p[3] = np.nan
    assert np.isnan(expected_move(p, r)[3])


@pytest.mark.parametrize("allow_short", [True, False])
@pytest.mark.parametrize("margin", [0.0, 0.002, math.inf])
def test_edge_targets_match_a_plain_reference(allow_short, margin):
    p = _random_proba(3000, 1)
    p[100:110] = np.nan
    rule = EdgeRule((-0.01, 0.0, 0.01), 0.0015, margin, 0.5, allow_short)
    got = edge_targets(p, rule)
    np.testing.assert_array_equal(got, _reference_targets(p, rule))
    assert set(np.unique(got)) <= ({-0.5, 0.0, 0.5} if allow_short else {0.0, 0.5})
    assert np.all(got[100:110] == 0)
    if math.isinf(margin):
        assert np.all(got == 0)


def test_edge_targets_hold_until_the_move_changes_sides():
    rule = EdgeRule((-0.01, 0.0, 0.01), 0.002, 0.0)
    # p_up - p_down drives the move: 0.3 -> +0.003 (enter), 0.1 -> +0.001 (hold), 0 -> 0 (hold),
    # -0.1 -> -0.001 (exit, too small to reverse), -0.3 -> -0.003 (enter short), +0.3 -> reverse long
    diffs = [0.0, 0.3, 0.1, 0.0, -0.1, -0.1, -0.3, -0.05, 0.3]
    p = np.array([[0.35 - d / 2, 0.3, 0.35 + d / 2] for d in diffs])
    np.testing.assert_array_equal(edge_targets(p, rule), [0, 1, 1, 1, 0, 0, -1, -1, 1])


def test_fit_edge_rule_takes_class_means_and_the_best_margin_on_its_rows():
    rng = np.random.default_rng(2)
    n = 4000
    p = _random_proba(n, 3)
    # returns that follow the probabilities a little, so some margins earn and some do not
    fwd = 0.01 * (p[:, 2] - p[:, 0]) + rng.normal(0, 0.006, n)
    cls = np.where(fwd > 0.002, 2, np.where(fwd < -0.002, 0, 1))
    cls[:7] = -1
    fwd[7:9] = np.nan
    cls[7:9] = 1
    cost = 0.0015
    margins = (0.0, 0.001, 0.002, 0.004)
    rule = fit_edge_rule(p, fwd, cls, cost, margins)
    ok = (cls >= 0) & np.isfinite(fwd)
    expected = tuple(float(fwd[ok & (cls == k)].mean()) for k in range(3))
    np.testing.assert_allclose(rule.class_returns, expected, rtol=1e-12)
    assert class_mean_returns(fwd, cls) == rule.class_returns
    pnls = {m: edge_net_pnl(_reference_targets(p, EdgeRule(expected, cost, m)), fwd, cost) for m in margins}
    assert max(pnls.values()) > 0
    assert rule.margin == max(pnls, key=pnls.get)
    assert rule.round_trip_cost == cost


def test_fit_edge_rule_never_trades_when_no_margin_pays():
    p = _random_proba(500, 4)
    fwd = np.random.default_rng(5).normal(0, 0.001, 500)  # unrelated to the probabilities, tiny moves
    cls = np.where(fwd > 0.0005, 2, np.where(fwd < -0.0005, 0, 1))
    rule = fit_edge_rule(p, fwd, cls, round_trip_cost=0.01)
    assert rule.margin == math.inf and np.all(edge_targets(p, rule) == 0)
    assert rule.as_config()["margin"] is None


def test_net_pnl_charges_half_the_round_trip_per_unit_traded():
    t = np.array([0, 1, 1, -1, 0.0])
    fwd = np.array([0.5, 0.01, -0.02, -0.03, 0.7])
    assert edge_net_pnl(t, fwd, 0.002) == pytest.approx(0.01 - 0.02 + 0.03 - 0.001 * (1 + 2 + 1))
    assert edge_net_pnl(t, fwd * 4, 0.0, horizon=4) == pytest.approx(0.02)


def test_round_trip_cost_of_a_cost_model():
    assert round_trip_cost_of(CostModel(taker_fee=0.00055, slippage_bps=2.0)) == pytest.approx(2 * (0.00055 + 0.0002))


def test_bad_inputs_name_what_is_wrong():
    with pytest.raises(ValueError, match="shape"):
        expected_move(np.zeros((4, 2)), (0, 0, 0))
    p = _random_proba(5, 6)
    p[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        edge_targets(p, EdgeRule((0.0, 0.0, 0.0), 0.001, 0.0))
    with pytest.raises(ValueError, match="margin"):
        EdgeRule((0.0, 0.0, 0.0), 0.001, -0.1)
    with pytest.raises(ValueError, match="rows"):
        fit_edge_rule(_random_proba(5, 7), np.zeros(4), np.zeros(5), 0.001)
