"""Overfitting statistics: probabilistic and deflated Sharpe ratio, PBO by CSCV.

References: Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier"
(2012, PSR), "The Deflated Sharpe Ratio" (2014, DSR); Bailey, Borwein,
López de Prado & Zhu, "The Probability of Backtest Overfitting" (2016, CSCV).
Sharpe ratios here are per observation (not annualised) unless stated.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329


def probabilistic_sharpe(sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """P(true SR > ``sr_benchmark``) given an observed per-period ``sr`` over ``n_obs`` returns.

    ``kurtosis`` is the raw (non-excess) kurtosis; 3 for normal returns.
    """
    if n_obs < 2:
        raise ValueError(f"n_obs={n_obs}: need at least 2 observations")
    denom = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if denom <= 0:
        raise ValueError(f"skew={skew}, kurtosis={kurtosis} with sr={sr} give a non-positive variance term")
    return float(stats.norm.cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom)))


def expected_max_sharpe(sr_variance: float, n_trials: int) -> float:
    """Expected maximum SR of ``n_trials`` unskilled strategies (the DSR benchmark SR0)."""
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials}: must be >= 1")
    if n_trials == 1:
        return 0.0
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe(sr: float, sr_variance: float, n_trials: int, n_obs: int, skew: float = 0.0,
                    kurtosis: float = 3.0) -> float:
    """PSR against the expected maximum SR of ``n_trials`` trials whose SRs vary by ``sr_variance``."""
    return probabilistic_sharpe(sr, expected_max_sharpe(sr_variance, n_trials), n_obs, skew, kurtosis)


def sharpe_moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    """Per-period SR, skewness and raw kurtosis of a return series, and its length."""
    r = np.asarray(returns, dtype=np.float64)
    sd = r.std(ddof=1)
    sr = float(r.mean() / sd) if sd > 0 else 0.0
    return sr, float(stats.skew(r)), float(stats.kurtosis(r, fisher=False)), int(r.size)


def deflated_sharpe_of_returns(returns: np.ndarray, trial_sharpes: np.ndarray) -> float:
    """DSR of a return series given the per-period SRs of every configuration tried."""
    sr, skew, kurt, n = sharpe_moments(returns)
    trial_sharpes = np.asarray(trial_sharpes, dtype=np.float64)
    trial_sharpes = trial_sharpes[np.isfinite(trial_sharpes)]
    var = float(trial_sharpes.var(ddof=1)) if trial_sharpes.size > 1 else 0.0
    return deflated_sharpe(sr, var, max(1, trial_sharpes.size), n, skew, kurt)


def _sharpe_columns(m: np.ndarray) -> np.ndarray:
    sd = m.std(axis=0, ddof=1)
    mean = m.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(sd > 0, mean / sd, 0.0)
    return out


def probability_of_backtest_overfitting(returns: np.ndarray, n_splits: int = 16) -> dict:
    """PBO by combinatorially symmetric cross-validation.

    ``returns`` is a (T, N) matrix: T periods of N configurations. The rows are
    cut into ``n_splits`` (even) blocks; for each way of choosing half of them
    as in-sample, the configuration with the best in-sample Sharpe is ranked
    out-of-sample among all N; ``w = rank / (N + 1)`` and ``logit = ln(w / (1 - w))``.
    PBO is the share of combinations with ``logit <= 0`` (the in-sample
    winner is at or below the out-of-sample median).
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"returns has shape {m.shape}; expected (periods, configurations >= 2)")
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits={n_splits}: must be an even number >= 2")
    t, n = m.shape
    if t < n_splits * 2:
        raise ValueError(f"returns has {t} periods: need at least {2 * n_splits} for {n_splits} splits")
    if not np.all(np.isfinite(m)):
        raise ValueError("returns holds NaN or infinite values")
    blocks = np.array_split(np.arange(t), n_splits)
    logits = []
    for chosen in itertools.combinations(range(n_splits), n_splits // 2):
        is_rows = np.concatenate([blocks[b] for b in chosen])
        oos_rows = np.concatenate([blocks[b] for b in range(n_splits) if b not in chosen])
        best = int(np.argmax(_sharpe_columns(m[is_rows])))
        oos = _sharpe_columns(m[oos_rows])
        rank = float(stats.rankdata(oos)[best])  # 1 = worst, N = best
        w = rank / (n + 1.0)
        logits.append(math.log(w / (1.0 - w)))
    logits_arr = np.asarray(logits)
    return {"pbo": float((logits_arr <= 0).mean()), "logits": logits_arr, "n_combinations": int(logits_arr.size)}
