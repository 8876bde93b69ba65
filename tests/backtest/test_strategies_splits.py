"""Walk-forward splits (purge, embargo) and the baselines (targets, leakage of the logistic regression)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backtest import baselines
from pipeline.training.splits import walk_forward_splits


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


def test_ma_momentum_and_fixed_baselines():
    close = np.r_[np.linspace(100, 50, 50), np.linspace(50, 120, 50)]
    t = baselines.ma_momentum_targets(close, 3, 10)
    assert np.all(t[:9] == 0) and t[20] == -1 and t[-1] == 1
    assert set(np.unique(baselines.ma_momentum_targets(close, 3, 10, allow_short=False))) == {0.0, 1.0}
    assert np.all(baselines.buy_and_hold_targets(5) == 1) and np.all(baselines.flat_targets(5) == 0)
    labels = baselines.direction_labels(np.array([100, 101, 100.9, 99, 99.0]), 1, 0.005)
    np.testing.assert_array_equal(labels, [2, 1, 0, 1, -1])


def _market(n, seed):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[100.0, c[:-1]]
    return o, np.maximum(o, c) * 1.002, np.minimum(o, c) * 0.998, c, rng.uniform(10, 20, n)


def test_candle_features_are_causal():
    o, h, lo, c, v = _market(600, 1)
    x, names = baselines.candle_features(o, h, lo, c, v)
    t = 400
    c2, h2, lo2, v2 = c.copy(), h.copy(), lo.copy(), v.copy()
    c2[t + 1 :] *= 1.3
    h2[t + 1 :] *= 1.3
    lo2[t + 1 :] *= 1.3
    v2[t + 1 :] *= 5
    x2, _ = baselines.candle_features(o, h2, lo2, c2, v2)
    np.testing.assert_array_equal(x[: t + 1], x2[: t + 1])
    assert len(names) == x.shape[1]


def test_logistic_regression_predictions_do_not_see_the_future():
    o, h, lo, c, v = _market(1600, 2)
    x, _ = baselines.candle_features(o, h, lo, c, v)
    out = baselines.logistic_regression_baseline(x, c, n_folds=4)
    assert out.tested.sum() > 1000 and not out.tested[:300].any()
    assert np.all(out.proba[~out.tested] == 0) and np.allclose(out.proba[out.tested].sum(1), 1)
    t = 1300  # inside the last-but-one test fold
    c2, h2, lo2 = c.copy(), h.copy(), lo.copy()
    shock = np.exp(np.random.default_rng(3).normal(0, 0.05, c.size - t - 1))
    for arr in (c2, h2, lo2):
        arr[t + 1 :] *= shock
    x2, _ = baselines.candle_features(o, h2, lo2, c2, v)
    out2 = baselines.logistic_regression_baseline(x2, c2, n_folds=4)
    np.testing.assert_array_equal(out.proba[: t + 1], out2.proba[: t + 1])
    assert not np.array_equal(out.proba[t + 1 :], out2.proba[t + 1 :])
