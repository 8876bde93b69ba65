"""The verdict's statistics on simulated data with a known answer: the Ledoit-Wolf bootstrap's coverage and size,
Diebold-Mariano's size and power, Holm's adjustment, the resolvable difference and the daily returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from pipeline.backtest.significance import (block_length, daily_returns, diebold_mariano, holm, newey_west_lags,
                                            resolvable_difference, sharpe_difference_test)
from pipeline.core.timegrid import DAY_MS

N_DAYS = 500
SIMS = 240
SAMPLES = 400


def paired_returns(rng, sims: int, n: int, sharpe: tuple[float, float], rho: float, phi: float,
                   sd: tuple[float, float] = (0.02, 0.03)) -> tuple[np.ndarray, np.ndarray]:
    """``sims`` pairs of daily return series with per-day Sharpe ratios ``sharpe``, correlation ``rho`` and AR(1)
    coefficient ``phi`` (unit-variance innovations scaled so each series' variance is sd**2)."""
    cov = [[1.0, rho], [rho, 1.0]]
    e = rng.multivariate_normal([0.0, 0.0], cov, size=(sims, n + 200))
    z = lfilter([1.0], [1.0, -phi], e, axis=1)[:, 200:] * math.sqrt(1.0 - phi ** 2)
    x = sharpe[0] * sd[0] + sd[0] * z[..., 0]
    y = sharpe[1] * sd[1] + sd[1] * z[..., 1]
    return x, y


@pytest.mark.parametrize("phi, seed", [(0.0, 1), (0.0, 2), (0.25, 3), (0.25, 4)])
def test_bootstrap_interval_covers_a_known_difference_in_93_to_97_percent(phi, seed):
    rng = np.random.default_rng(seed)
    true = (0.10, 0.04)  # per-day Sharpe ratios: an annualised difference of 0.06 * sqrt(365) = 1.15
    x, y = paired_returns(rng, SIMS, N_DAYS, true, rho=0.5, phi=phi)
    cover = 0
    for k in range(SIMS):
        t = sharpe_difference_test(x[k], y[k], samples=SAMPLES, seed=[seed, k], periods_per_year=1.0)
        cover += t.ci_low <= true[0] - true[1] <= t.ci_high
    assert 0.93 <= cover / SIMS <= 0.97, (phi, seed, cover / SIMS)


@pytest.mark.parametrize("phi, seed", [(0.0, 5), (0.25, 6)])
def test_bootstrap_rejects_a_true_zero_difference_at_about_5_percent(phi, seed):
    rng = np.random.default_rng(seed)
    x, y = paired_returns(rng, SIMS, N_DAYS, (0.05, 0.05), rho=0.3, phi=phi)
    p = np.array([sharpe_difference_test(x[k], y[k], samples=SAMPLES, seed=[seed, k]).p_value for k in range(SIMS)])
    rate = float(np.mean(p < 0.05))
    assert 0.02 <= rate <= 0.085, (phi, seed, rate)
    # and it has power: a large true difference is rejected nearly always
    x, y = paired_returns(np.random.default_rng(seed + 100), 40, N_DAYS, (0.25, 0.0), rho=0.3, phi=phi)
    p = [sharpe_difference_test(x[k], y[k], samples=SAMPLES, seed=k).p_value for k in range(40)]
    assert np.mean(np.array(p) < 0.05) >= 0.9


def test_bootstrap_is_seeded_symmetric_and_annualised():
    rng = np.random.default_rng(0)
    x, y = paired_returns(rng, 1, 400, (0.1, 0.0), rho=0.2, phi=0.1)
    a = sharpe_difference_test(x[0], y[0], seed=3)
    assert a == sharpe_difference_test(x[0], y[0], seed=3)  # seeded: the same numbers
    b = sharpe_difference_test(y[0], x[0], seed=3)
    assert b.difference == pytest.approx(-a.difference) and b.se == pytest.approx(a.se)
    daily = x[0].mean() / x[0].std() - y[0].mean() / y[0].std()
    assert a.difference == pytest.approx(daily * math.sqrt(365))
    assert a.block_days == block_length(400) == 8 and a.n_days == 400
    assert sharpe_difference_test(x[0], y[0], block=20, seed=3).block_days == 20
    assert a.resolvable == pytest.approx(resolvable_difference(a.se))
    # a series that never varies (never traded) has Sharpe 0: the test is then the other's Sharpe against 0
    z = sharpe_difference_test(x[0], np.zeros(400), seed=1)
    assert z.sharpe_y == 0 and z.difference == pytest.approx(x[0].mean() / x[0].std() * math.sqrt(365))
    same = sharpe_difference_test(x[0], x[0].copy())
    assert same.difference == 0 and same.p_value == 1.0


def test_resolvable_difference_is_the_80_percent_power_distance():
    assert resolvable_difference(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert resolvable_difference(0.5, alpha=0.05, power=0.5) == pytest.approx(0.5 * 1.959964, abs=1e-5)


def test_diebold_mariano_size_power_and_lags():
    rng = np.random.default_rng(7)
    n, sims = 2000, 300
    e = lfilter([1.0], [1.0, -0.5], rng.normal(size=(sims, n)), axis=1)  # autocorrelated loss differences
    base = rng.normal(1.0, 0.2, size=(sims, n))
    p = np.array([diebold_mariano(base[k] + e[k] * 0.05, base[k], horizon=4).p_value for k in range(sims)])
    assert 0.02 <= np.mean(p < 0.05) <= 0.09
    assert diebold_mariano(base[0] - 0.02, base[0] + e[0] * 0.01, horizon=1).p_value < 1e-6
    assert newey_west_lags(26_000, horizon=1) == 13 and newey_west_lags(100, horizon=24) == 24
    r = diebold_mariano(np.r_[np.nan, base[0][1:]], base[1], horizon=4)
    assert r.n == n - 1 and r.lags >= 4


def test_holm_adjusts_step_down_and_keeps_order():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.2])
    adj = holm(p)
    np.testing.assert_allclose(adj[[0, 2, 1, 4]], [0.04, 0.09, 0.09, 0.2])
    assert np.isnan(adj[3])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_daily_returns_compound_within_utc_days():
    ts = np.array([0, 3_600_000, DAY_MS, DAY_MS + 1, 3 * DAY_MS])
    days, r = daily_returns(ts, np.array([0.1, -0.1, 0.0, 0.05, 0.02]))
    assert days.tolist() == [0, DAY_MS, 3 * DAY_MS]
    np.testing.assert_allclose(r, [1.1 * 0.9 - 1, 0.05, 0.02])
