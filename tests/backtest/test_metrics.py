"""Metrics against textbook formulas and independent implementations; DSR against the paper's example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.backtest import metrics as m
from pipeline.backtest.overfitting import (
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    probability_of_backtest_overfitting,
)


def test_sharpe_sortino_cagr_on_a_known_series():
    # returns alternate +2 % / -1 %: mean 0.5 %, sample sd = 1.5 % * sqrt(n / (n - 1))
    n = 1000
    r = np.where(np.arange(n) % 2 == 0, 0.02, -0.01)
    equity = 100 * np.cumprod(1 + r)
    sd = np.sqrt(np.sum((r - 0.005) ** 2) / (n - 1))
    assert m.sharpe_ratio(m.bar_returns(equity, 100), 8760) == pytest.approx(0.005 / sd * math.sqrt(8760))
    assert m.sortino_ratio(r, 365) == pytest.approx(0.005 / math.sqrt(0.5 * 0.01**2) * math.sqrt(365))
    out = m.trading_metrics(equity, np.ones(n), {}, 100.0, "D")
    assert out["cagr"] == pytest.approx((equity[-1] / 100) ** (365 / n) - 1)
    assert out["total_return"] == pytest.approx(equity[-1] / 100 - 1)
    assert out["annual_volatility"] == pytest.approx(sd * math.sqrt(365))


def test_constant_return_series():
    r = np.full(50, 0.001)
    assert m.sharpe_ratio(r, 8760) == math.inf  # zero variance, positive mean
    equity = 100 * np.cumprod(1 + r)
    out = m.trading_metrics(equity, np.zeros(50), {}, 100.0, "60")
    assert out["max_drawdown"] == 0.0 and math.isnan(out["calmar"]) and out["exposure"] == 0.0
    # 8760 bars per year for hourly bars
    assert out["cagr"] == pytest.approx(1.001 ** 8760 - 1)


def test_max_drawdown_and_duration_of_a_known_curve():
    equity = np.array([100, 120, 90, 60, 80, 130, 125, 140.0])
    out = m.trading_metrics(equity, np.ones(8), {}, 100.0, "60")
    assert out["max_drawdown"] == pytest.approx(60 / 120 - 1)
    # below the 120 peak for 3 bars (90, 60, 80); with the initial equity prepended the runs are the same
    assert m.max_drawdown_duration(equity) == 3
    np.testing.assert_allclose(m.drawdown(equity), equity / np.maximum.accumulate(equity) - 1)
    assert out["calmar"] == pytest.approx(out["cagr"] / 0.5)


def test_trade_statistics_var_and_es():
    trades = {"pnl": np.array([10.0, -5.0, 20.0, -5.0]), "holding_bars": np.array([1, 2, 3, 6])}
    out = m.trading_metrics(np.array([101.0, 102, 103]), np.array([1.0, 0.0, 0.5]), trades, 100.0, "60",
                            fees_paid=3.0, funding_paid=-1.0, turnover=408.0)
    assert out["win_rate"] == 0.5 and out["profit_factor"] == pytest.approx(3.0)
    assert out["expectancy"] == pytest.approx(5.0) and out["avg_holding_bars"] == pytest.approx(3.0)
    assert out["exposure"] == pytest.approx(2 / 3) and out["turnover"] == pytest.approx(4.0)
    assert out["fees_paid"] == 3.0 and out["funding_paid"] == -1.0
    r = np.random.default_rng(0).normal(0, 0.01, 100_000)
    var, es = m.value_at_risk(r)
    assert var == pytest.approx(0.01 * 1.6449, rel=0.02)
    assert es == pytest.approx(0.01 * 2.0627, rel=0.02)  # normal ES_95 = phi(1.645) / 0.05


def test_classification_against_sklearn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3)) + np.eye(3)[y] * 0.8
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    proba[:20] = [0.2, 0.3, 0.5]  # ties in the scores
    out = m.classification_metrics(y, proba)
    pred = proba.argmax(1)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    for c, name in enumerate(m.CLASS_NAMES):
        assert out[f"precision_{name}"] == pytest.approx(p[c])
        assert out[f"recall_{name}"] == pytest.approx(r[c])
        assert out[f"f1_{name}"] == pytest.approx(f[c])
    assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    np.testing.assert_array_equal(out["confusion_matrix"], skm.confusion_matrix(y, pred, labels=[0, 1, 2]))
    with pytest.raises(ValueError, match="proba row 3"):
        bad = proba.copy()
        bad[3, 1] = np.nan
        m.classification_metrics(y, bad)


def test_deflated_sharpe_matches_the_papers_example():
    # Bailey & López de Prado (2014), section 5: N = 100 trials, V[SR] = 1/2 (annualised), yearly SR 2.5,
    # T = 1250 daily observations, skewness -3, kurtosis 10 -> SR0 ~ 0.1132 per day, DSR ~ 0.9004
    sr0 = expected_max_sharpe(0.5 / 250, 100)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe(2.5 / math.sqrt(250), 0.5 / 250, 100, 1250, skew=-3, kurtosis=10)
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_probabilistic_sharpe_formula():
    # normal returns (skew 0, kurtosis 3): z = (SR - SR*) sqrt(T - 1) / sqrt(1 + SR^2 / 2)
    sr, t = 0.1, 500
    z = sr * math.sqrt(t - 1) / math.sqrt(1 + sr * sr / 2)
    assert probabilistic_sharpe(sr, 0.0, t) == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))))
    assert probabilistic_sharpe(0.0, 0.0, t) == pytest.approx(0.5)
    assert expected_max_sharpe(1.0, 1) == 0.0  # one trial: no selection bias


def test_pbo_extremes():
    rng = np.random.default_rng(2)
    t, n = 800, 10
    noise = rng.normal(0, 0.01, (t, n))
    # one configuration has a real edge everywhere: the in-sample winner stays best out of sample
    skilled = noise.copy()
    skilled[:, 3] += 0.01
    assert probability_of_backtest_overfitting(skilled, 8)["pbo"] == 0.0
    result = probability_of_backtest_overfitting(noise, 8)
    assert result["n_combinations"] == 70
    assert 0.2 < result["pbo"] < 0.8  # pure noise: about one half
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(noise, 7)


def test_pbo_matches_a_direct_count():
    # independent, literal implementation of CSCV on a tiny matrix
    from itertools import combinations

    rng = np.random.default_rng(3)
    mat = rng.normal(0, 1, (40, 5)) + np.linspace(-0.1, 0.1, 5)
    blocks = np.array_split(np.arange(40), 4)
    below = 0
    combos = list(combinations(range(4), 2))
    for chosen in combos:
        is_rows = np.concatenate([blocks[i] for i in chosen])
        oos_rows = np.concatenate([blocks[i] for i in range(4) if i not in chosen])
        sr_is = [mat[is_rows, j].mean() / mat[is_rows, j].std(ddof=1) for j in range(5)]
        sr_oos = [mat[oos_rows, j].mean() / mat[oos_rows, j].std(ddof=1) for j in range(5)]
        best = int(np.argmax(sr_is))
        rank = sorted(sr_oos).index(sr_oos[best]) + 1
        below += math.log((rank / 6) / (1 - rank / 6)) <= 0
    assert probability_of_backtest_overfitting(mat, 4)["pbo"] == pytest.approx(below / len(combos))
