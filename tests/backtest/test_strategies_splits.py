"""Walk-forward splits (purge, embargo) and the strategies (targets; the logistic regression's labels, leakage, costs)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.backtest import strategies
from pipeline.core.positions import SignalRule, class_mean_returns, edge_targets, target_positions
from pipeline.core.splits import walk_forward_splits

COST = 2 * (0.00055 + 0.0002)


def test_walk_forward_splits_are_purged_ordered_and_cover_the_tail():
    folds = walk_forward_splits(1000, 4, 300, purge=5, embargo=3)
    assert len(folds) == 4
    assert folds[-1].test[-1] == 999
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(tests, np.arange(tests[0], 1000))  # contiguous, disjoint
    for f in folds:
        assert f.train[0] == 0 and f.train.size >= 300
        assert f.test[0] - f.train[-1] - 1 == 5 + 3  # purge + embargo gap
    assert folds[1].train.size > folds[0].train.size  # expanding window
    with pytest.raises(ValueError, match="too few"):
        walk_forward_splits(100, 4, 90, test_size=10)
    with pytest.raises(ValueError, match="n_folds"):
        walk_forward_splits(100, 0, 10)


def test_ma_momentum_and_fixed_targets():
    close = np.r_[np.linspace(100, 50, 50), np.linspace(50, 120, 50)]
    t = strategies.ma_momentum_targets(close, 3, 10)
    assert np.all(t[:9] == 0) and t[20] == -1 and t[-1] == 1
    assert set(np.unique(strategies.ma_momentum_targets(close, 3, 10, allow_short=False))) == {0.0, 1.0}
    assert np.all(strategies.buy_and_hold_targets(5) == 1) and np.all(strategies.flat_targets(5) == 0)


def _lr(lab, **kw):
    return strategies.logistic_regression_strategy(lab.features, lab.usable, lab.fwd_return, lab.label_class,
                                                   COST, n_folds=4, **kw)


def test_logistic_regression_predictions_and_targets_do_not_see_the_future(market_factory):
    lab = market_factory("BTCUSDT", 1600, 2).labelled()
    out = _lr(lab)
    assert out.tested.sum() > 1000 and not out.tested[:320].any()
    assert np.isnan(out.proba[~out.tested]).all() and np.allclose(out.proba[out.tested].sum(1), 1)
    t = 1300  # inside the last-but-one test fold
    rng = np.random.default_rng(3)
    x2, fwd2, cls2 = lab.features.copy(), lab.fwd_return.copy(), lab.label_class.copy()
    x2[t + 1 :] += rng.normal(0, 3, x2[t + 1 :].shape)
    fwd2[t:] = rng.normal(0, 0.05, fwd2[t:].shape)  # labels at t look into t + 1
    cls2[t:] = rng.integers(0, 3, cls2[t:].shape)
    out2 = _lr(dataclasses.replace(lab, features=x2, fwd_return=fwd2, label_class=cls2))
    np.testing.assert_array_equal(out.proba[: t + 1], out2.proba[: t + 1])
    np.testing.assert_array_equal(out.targets[: t + 1], out2.targets[: t + 1])
    assert not np.array_equal(out.proba[t + 1 :], out2.proba[t + 1 :])


def test_logistic_regression_ignores_warmup_rows_and_unknown_labels(market_factory):
    lab = market_factory("BTCUSDT", 1600, 4).labelled()
    out = _lr(lab)
    usable = lab.usable.copy()
    usable[900:950] = False  # e.g. indicators restarting after a gap
    cls = lab.label_class.copy()
    cls[500:600] = -1
    x = lab.features.copy()
    x[900:950] = 1e6  # values of unusable rows must not matter
    fwd = lab.fwd_return.copy()
    fwd[500:600] = 1.0  # nor the returns of rows with an unknown label
    a = _lr(dataclasses.replace(lab, usable=usable, label_class=cls))
    b = _lr(dataclasses.replace(lab, usable=usable, label_class=cls, features=x, fwd_return=fwd))
    np.testing.assert_array_equal(a.proba, b.proba)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert np.isnan(a.proba[900:950]).all() and np.all(a.targets[900:950] == 0)
    assert not np.array_equal(a.proba[out.tested & usable], out.proba[out.tested & usable])


def test_each_fold_rule_is_fitted_on_its_validation_tail(market_factory):
    lab = market_factory("BTCUSDT", 2000, 5, signal=0.004).labelled()
    out = _lr(lab, validation_fraction=0.25)
    folds = walk_forward_splits(2000, 4, max(200, 2000 // 5), purge=1)
    assert len(out.rules) == 4
    for fold, rule in zip(folds, out.rules):
        val = np.arange(int(fold.train_end * 0.75), fold.train_end)
        ok = val[lab.usable[val]]
        assert rule.class_returns == class_mean_returns(lab.fwd_return[ok], lab.label_class[ok])
        assert rule.round_trip_cost == COST
        block = np.arange(*fold.test_range)
        np.testing.assert_array_equal(out.targets[block], edge_targets(out.proba[block], rule))


def test_cost_aware_rule_finds_a_planted_edge_and_sits_out_noise(market_factory):
    planted = market_factory("BTCUSDT", 3000, 6, signal=0.004).labelled()
    found = _lr(planted)
    pnl = (found.targets[:-1] * planted.fwd_return[:-1]).sum() - COST / 2 * np.abs(np.diff(found.targets)).sum()
    assert pnl > 0.05 and np.abs(np.diff(found.targets)).sum() > 10
    noise = market_factory("BTCUSDT", 3000, 7).labelled()
    idle = _lr(noise)
    # the old fixed-threshold rule on the same probabilities trades on most bars; the edge rule a tenth as often
    p = np.nan_to_num(idle.proba)
    fixed = target_positions(p[:, 0], p[:, 2], SignalRule(0.4))
    assert np.count_nonzero(np.diff(idle.targets)) * 10 < np.count_nonzero(np.diff(fixed))


def test_logistic_regression_names_misaligned_inputs(market_factory):
    lab = market_factory("BTCUSDT", 800, 8).labelled()
    with pytest.raises(ValueError, match="usable, fwd_return and label_class"):
        strategies.logistic_regression_strategy(lab.features, lab.usable[:-1], lab.fwd_return, lab.label_class, COST)
