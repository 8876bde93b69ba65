"""The logistic regression's Newton fit against sklearn's LogisticRegression (same C, same standardisation).

Tolerances: against sklearn's exact solver (``newton-cholesky``, tol 1e-10) the
coefficients agree to 1e-8; against L-BFGS (the previous solver), run to
convergence, to 1e-4 (L-BFGS stops on its objective's relative change first),
and its probabilities to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pipeline.backtest import strategies
from pipeline.backtest.strategies import LR_C, fit_logistic

COST = 2 * (0.00055 + 0.0002)


def _sample(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated inputs (5 factors, like indicator families) on different scales; labels from a softmax of 3."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)) @ rng.normal(size=(5, k)) + 0.3 * rng.normal(size=(n, k))
    x = x * rng.uniform(0.01, 100, k) + rng.normal(0, 50, k)
    z = (x - x.mean(0)) / x.std(0)
    logits = z[:, :3] @ rng.normal(0, 0.5, (3, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = (rng.uniform(size=(n, 1)) > p.cumsum(1)).sum(1)
    return x, y


def _sklearn(x, y, solver: str, tol: float):
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=LR_C, solver=solver, tol=tol, max_iter=10_000).fit(scaler.transform(x), y)
    intercept = model.intercept_ - (model.intercept_.mean() if model.intercept_.size > 2 else 0.0)
    return model, intercept, scaler.transform(x)


@pytest.mark.parametrize("classes", [(0, 1, 2), (0, 2), (1, 2)])
def test_newton_fit_matches_sklearn(classes):
    x, y = _sample(1500, 12, seed=len(classes) + classes[0])
    if len(classes) == 2:  # binary: sklearn fits one coefficient vector
        y = np.where(y >= 1, classes[1], classes[0])
    fit = fit_logistic(x, y)
    assert fit.converged and fit.n_iter <= 15
    np.testing.assert_array_equal(fit.classes, np.array(classes))
    exact, exact_b, _ = _sklearn(x, y, "newton-cholesky", 1e-10)
    assert fit.coef.shape == exact.coef_.shape
    np.testing.assert_allclose(fit.coef, exact.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.intercept, exact_b, rtol=0, atol=1e-8)
    lbfgs, lbfgs_b, xs = _sklearn(x, y, "lbfgs", 1e-8)
    np.testing.assert_allclose(fit.coef, lbfgs.coef_, rtol=0, atol=1e-4)
    np.testing.assert_allclose(fit.intercept, lbfgs_b, rtol=0, atol=1e-4)
    proba = fit.predict_proba(x)
    np.testing.assert_allclose(proba[:, list(classes)], lbfgs.predict_proba(xs), rtol=0, atol=1e-5)
    absent = [c for c in range(3) if c not in classes]
    assert np.all(proba[:, absent] == 0) and np.allclose(proba.sum(1), 1)


def test_newton_fit_optimum_does_not_depend_on_the_start_and_a_constant_input_is_harmless():
    x, y = _sample(2000, 10, seed=11)
    x[:, 3] = 7.0  # a constant column: scale 1 as StandardScaler, coefficient 0 by the penalty
    cold = fit_logistic(x[:1500], y[:1500])
    warm_from = fit_logistic(x[:1000], y[:1000])
    warm = fit_logistic(x[:1500], y[:1500], init=warm_from)
    assert warm.converged and warm.n_iter < cold.n_iter
    np.testing.assert_allclose(warm.coef, cold.coef, rtol=0, atol=1e-9)
    np.testing.assert_allclose(warm.intercept, cold.intercept, rtol=0, atol=1e-9)
    assert np.all(np.abs(cold.coef[:, 3]) < 1e-12)
    exact, exact_b, _ = _sklearn(x[:1500], y[:1500], "newton-cholesky", 1e-10)
    np.testing.assert_allclose(cold.coef, exact.coef_, rtol=0, atol=1e-8)


def test_newton_fit_names_bad_input():
    x, y = _sample(100, 4, seed=1)
    with pytest.raises(ValueError, match="need at least 2"):
        fit_logistic(x, np.zeros(100, dtype=int))
    with pytest.raises(ValueError, match=r"x has shape \(100, 4\), y \(99,\)"):
        fit_logistic(x, y[:-1])


def test_strategy_newton_and_lbfgs_agree(market_factory):
    """The whole walk-forward strategy on either solver: same folds, the same probabilities to 2e-3.

    (sklearn's default tol=1e-4 stops L-BFGS short of the optimum: the probabilities differ by ~1e-3.)
    """
    lab = market_factory("BTCUSDT", 1600, 5, signal=0.004).labelled()
    run = lambda solver: strategies.logistic_regression_strategy(  # noqa: E731
        lab.features, lab.usable, lab.fwd_return, lab.label_class, COST, n_folds=4, solver=solver)
    newton, lbfgs = run("newton"), run("lbfgs")
    np.testing.assert_array_equal(newton.tested, lbfgs.tested)
    np.testing.assert_allclose(newton.proba[newton.tested], lbfgs.proba[lbfgs.tested], rtol=0, atol=2e-3)
    assert [r.class_returns for r in newton.rules] == [r.class_returns for r in lbfgs.rules]
    assert np.mean(newton.targets != lbfgs.targets) < 0.01
    with pytest.raises(ValueError, match="solver='sgd'"):
        run("sgd")
