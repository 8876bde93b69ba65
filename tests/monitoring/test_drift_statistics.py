"""Drift statistics against their formulas: PSI on hand-made histograms, KS against the ECDFs and scipy, Bonferroni."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.config import Settings
from pipeline.monitoring.drift import (PSI_FLOOR, bin_shares, bonferroni, ks_test, psi, psi_from_shares,
                                       quantile_edges)


def test_psi_of_hand_made_histograms():
    r = [0.25, 0.25, 0.25, 0.25]
    c = [0.10, 0.20, 0.30, 0.40]
    want = sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c))
    assert psi_from_shares(r, c) == pytest.approx(want, rel=1e-12)
    assert psi_from_shares(r, r) == 0.0
    # symmetric in its two arguments, and positive for any difference
    assert psi_from_shares(c, r) == pytest.approx(want, rel=1e-12)
    assert psi_from_shares(r, [0.26, 0.24, 0.25, 0.25]) > 0


def test_empty_bin_takes_the_floor_not_infinity():
    r = [0.5, 0.5, 0.0]
    c = [0.4, 0.4, 0.2]
    value = psi_from_shares(r, c)
    want = (0.4 - 0.5) * math.log(0.8) * 2 + (0.2 - PSI_FLOOR) * math.log(0.2 / PSI_FLOOR)
    assert math.isfinite(value) and value == pytest.approx(want, rel=1e-12)


def test_bins_are_reference_quantiles_and_shares_count_values():
    ref = np.arange(100, dtype=float)  # 0..99
    edges = quantile_edges(ref, 4)
    np.testing.assert_allclose(edges, np.quantile(ref, [0.25, 0.5, 0.75]))
    shares = bin_shares(ref, edges)
    np.testing.assert_allclose(shares, [0.25, 0.25, 0.25, 0.25])
    # hand count: values below the first edge, between, above the last (an edge value goes right)
    cur = np.array([-5.0, edges[0], 30.0, 60.0, 80.0, 1e9])
    np.testing.assert_array_equal(bin_shares(cur, edges) * cur.size, [1, 2, 1, 2])
    # a constant reference collapses to one edge: two bins, no error
    assert quantile_edges(np.ones(50), 10).size == 1


def test_psi_end_to_end_equals_the_formula_on_counted_bins():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(0, 1, 2000), rng.normal(0.5, 1.3, 500)
    edges = np.quantile(ref, np.linspace(0, 1, 11)[1:-1])
    idx_r, idx_c = np.digitize(ref, edges), np.digitize(cur, edges)  # right-closed like searchsorted(right)
    r = np.array([(idx_r == k).mean() for k in range(10)])
    c = np.array([(idx_c == k).mean() for k in range(10)])
    r, c = np.maximum(r, PSI_FLOOR), np.maximum(c, PSI_FLOOR)
    assert psi(ref, cur, bins=10) == pytest.approx(float(np.sum((c - r) * np.log(c / r))), rel=1e-10)
    assert psi(ref, cur) > 0.2 > psi(ref, rng.normal(0, 1, 2000))


def test_ks_statistic_is_the_largest_ecdf_gap_and_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)
    stat, p = ks_test(a, b)
    grid = np.concatenate([a, b])
    gap = max(abs((a <= x).mean() - (b <= x).mean()) for x in grid)
    assert stat == pytest.approx(gap, abs=1e-12)
    want = stats.ks_2samp(a, b)
    assert (stat, p) == pytest.approx((want.statistic, want.pvalue))
    # NaNs are left out, not compared
    assert ks_test(np.append(a, np.nan), b) == pytest.approx((stat, p))


def test_bonferroni_multiplies_by_the_number_of_tests_and_caps_at_one():
    np.testing.assert_allclose(bonferroni([0.001, 0.01, 0.2, 0.5]), [0.004, 0.04, 0.8, 1.0])
    # with 30 features a raw p of 0.001 is no longer below 0.01
    assert bonferroni(np.full(30, 0.001))[0] == pytest.approx(0.03)


def test_no_finite_values_is_a_clear_error():
    with pytest.raises(ValueError, match="reference: no finite values"):
        psi([np.nan, np.nan], [1.0, 2.0])


def test_drift_settings_are_validated():
    assert Settings().drift_psi_threshold == 0.2 and Settings().drift_ks_pvalue == 0.01
    with pytest.raises(ValueError, match="CONVTRADE_DRIFT_KS_PVALUE"):
        Settings(drift_ks_pvalue=1.5)
    with pytest.raises(ValueError, match="CONVTRADE_DRIFT_RECENT_BARS"):
        Settings(drift_recent_bars=1)
    assert Settings.from_env({"CONVTRADE_DRIFT_COOLDOWN_HOURS": "6"}).drift_cooldown_hours == 6.0
