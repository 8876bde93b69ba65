"""Paired significance tests for the verdict: is strategy A's Sharpe after costs different from B's, and does
A's direction head predict better than B's, on the same test bars?

- :func:`sharpe_difference_test`: the studentized circular block bootstrap of Ledoit and Wolf (2008,
  "Robust performance hypothesis testing with the Sharpe ratio", J. Empirical Finance 15), on paired daily
  net returns. The statistic is the difference of the two Sharpe ratios, a smooth function of the means of
  (x, y, x^2, y^2); its standard error is the delta method over a HAC estimate of their covariance (Bartlett
  weights ``1 - j / b`` up to lag ``b - 1``, the overlapping-block estimator of block ``b``). Each resample
  joins ``ceil(n / b)`` blocks of ``b`` consecutive days, circularly, and is studentized by its own
  block-sum estimate (Götze and Künsch 1996, as in Ledoit and Wolf). The confidence interval is symmetric,
  ``diff +- q * se`` with ``q`` the ``1 - alpha`` quantile of ``|diff* - diff| / se*``; the p-value of
  "no difference" is ``(1 + #{|diff* - diff| / se* >= |diff| / se}) / (1 + M)``.
- Block length rule: ``b = ceil(n ** (1/3))`` days (the rate at which the block bootstrap's variance and
  distribution errors are balanced, Hall, Horowitz and Jing 1995, with constant 1): 11 days for 3.5 years
  of days. ``CONVTRADE_BOOTSTRAP_BLOCK_DAYS`` overrides it.
- :func:`diebold_mariano`: the Diebold-Mariano test on per-bar loss differences with a Newey-West
  (Bartlett) variance, lags ``max(horizon, floor(4 (n / 100) ** (2/9)))`` (Newey and West 1994's rule,
  never fewer than the label horizon, whose overlapping labels correlate the losses over ``horizon - 1``
  bars).
- :func:`holm`: Holm's step-down adjustment of a family of p-values (controls the family-wise error rate
  under any dependence).
- :func:`resolvable_difference`: the smallest true difference a two-sided level-``alpha`` test detects
  with probability ``power``: ``(z_{1 - alpha/2} + z_{power}) * se``, with the test's own standard error
  (so it carries the measured variances and the correlation of the two strategies).

Sharpe ratios here are annualised from daily returns on a 365-day year.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from pipeline.core.timegrid import DAY_MS

DAYS_PER_YEAR = 365.0


def daily_returns(ts_ms: np.ndarray, bar_returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compounded returns per UTC day of per-bar returns: (day start in ms, return), days in order."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    r = np.asarray(bar_returns, dtype=np.float64)
    if ts_ms.shape != r.shape:
        raise ValueError(f"daily_returns: ts_ms has shape {ts_ms.shape}, returns {r.shape}")
    if r.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    day = ts_ms // DAY_MS
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    logs = np.log1p(np.maximum(r, -1.0 + 1e-15))
    return day[starts] * DAY_MS, np.expm1(np.add.reduceat(logs, starts))


def block_length(n: int) -> int:
    """The documented rule: ``ceil(n ** (1/3))`` observations per block (at least 1)."""
    return max(1, math.ceil(n ** (1.0 / 3.0) - 1e-9))


def _sharpe_parts(m: np.ndarray, active: np.ndarray):
    """Sharpe difference and its gradient from the moments m = (mean x, mean y, mean x^2, mean y^2) (..., 4).

    An inactive side (a series that never varies: a strategy that never traded) has Sharpe 0 and no gradient.
    """
    mu = m[..., :2]
    var = np.maximum(m[..., 2:] - mu ** 2, 1e-300)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sr = np.where(active, mu / sd, 0.0)
        grad = np.empty(m.shape)
        sign = np.array([1.0, -1.0])
        grad[..., :2] = np.where(active, sign * m[..., 2:] / (var * sd), 0.0)
        grad[..., 2:] = np.where(active, -sign * mu / (2.0 * var * sd), 0.0)
    return sr[..., 0] - sr[..., 1], grad


def _hac(v: np.ndarray, b: int) -> np.ndarray:
    """HAC covariance of the rows of ``v`` (n, k): Bartlett weights 1 - j/b for lags 1 .. b-1."""
    u = v - v.mean(axis=0)
    n = u.shape[0]
    psi = u.T @ u / n
    for j in range(1, min(b, n)):
        g = u[j:].T @ u[:-j] / n
        psi += (1.0 - j / b) * (g + g.T)
    return psi


@dataclasses.dataclass(frozen=True)
class SharpeTest:
    """A paired Sharpe-difference test (annualised): x's Sharpe minus y's."""

    sharpe_x: float
    sharpe_y: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    resolvable: float  # smallest difference resolvable at the requested power
    n_days: int
    block_days: int
    samples: int
    correlation: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def sharpe_difference_test(x: np.ndarray, y: np.ndarray, block: int = 0, samples: int = 2000,
                           seed: int | np.random.SeedSequence = 0, alpha: float = 0.05, power: float = 0.8,
                           periods_per_year: float = DAYS_PER_YEAR) -> SharpeTest:
    """The studentized circular block bootstrap of the Sharpe difference of paired returns ``x``, ``y`` (see the
    module docstring). ``block`` 0: :func:`block_length`. Results are annualised by ``periods_per_year``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"sharpe_difference_test: x has shape {x.shape}, y {y.shape}: need two equal 1-d series")
    n = x.shape[0]
    nan = SharpeTest(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n, 0,
                     samples, math.nan)
    if n < 8 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return nan
    active = np.array([x.std() > 0, y.std() > 0])
    if not active.any():
        return dataclasses.replace(nan, sharpe_x=0.0, sharpe_y=0.0, difference=0.0)
    b = int(block) if block else block_length(n)
    b = max(1, min(b, n))
    scale = math.sqrt(periods_per_year)
    v = np.column_stack([x, y, x * x, y * y])
    m = v.mean(axis=0)
    diff, grad = _sharpe_parts(m, active)
    se = float(math.sqrt(max(grad @ _hac(v, b) @ grad, 0.0) / n))
    # resamples: l blocks of b consecutive (circular) observations; moments and block sums in one gather
    rng = np.random.default_rng(seed)
    l = -(-n // b)
    starts = rng.integers(0, n, size=(samples, l))
    # block sums from prefix sums of the circularly extended series: one gather of (M, l) per column
    csum = np.concatenate([np.zeros((1, 4)), np.cumsum(np.concatenate([v, v[:b]]), axis=0)])
    sums = csum[starts + b] - csum[starts]  # (M, l, 4)
    ms = sums.sum(axis=1) / (l * b)
    d_star, g_star = _sharpe_parts(ms, active)
    # g*' Psi* g* with Psi* = mean over blocks of zeta zeta', zeta = centred block sum / sqrt(b)
    w = np.einsum("mli,mi->ml", sums - b * ms[:, None, :], g_star) / math.sqrt(b)
    se_star = np.sqrt(np.mean(w * w, axis=1) / (l * b))
    ok = (se_star > 0) & np.isfinite(se_star) & np.isfinite(d_star)
    root = np.abs(d_star[ok] - diff) / se_star[ok]
    sd = np.sqrt(np.maximum(m[2:] - m[:2] ** 2, 0.0))
    sr = np.where(active, m[:2] / np.where(sd > 0, sd, 1.0), 0.0)
    corr = float(np.corrcoef(x, y)[0, 1]) if active.all() else math.nan
    if root.size == 0 or not se > 1e-12 * max(1.0, abs(diff)):  # identical series: no difference to test
        return SharpeTest(float(sr[0] * scale), float(sr[1] * scale), float(diff * scale), float(diff * scale),
                          float(diff * scale), 1.0 if abs(diff) < 1e-12 else 0.0, 0.0, 0.0, n, b, samples, corr)
    q = float(np.quantile(root, 1.0 - alpha))
    p = float((1 + np.count_nonzero(root >= abs(diff) / se)) / (1 + root.size))
    return SharpeTest(
        sharpe_x=float(sr[0] * scale), sharpe_y=float(sr[1] * scale), difference=float(diff * scale),
        ci_low=float((diff - q * se) * scale), ci_high=float((diff + q * se) * scale), p_value=p,
        se=se * scale, resolvable=resolvable_difference(se * scale, alpha, power), n_days=n, block_days=b,
        samples=int(root.size), correlation=corr)


def resolvable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference that a two-sided level-``alpha`` test with standard error ``se`` rejects with
    probability ``power`` (normal approximation): ``(z_{1-alpha/2} + z_power) * se``."""
    from statistics import NormalDist

    if not math.isfinite(se):
        return math.nan
    z = NormalDist()
    return float((z.inv_cdf(1.0 - alpha / 2.0) + z.inv_cdf(power)) * se)


def newey_west_lags(n: int, horizon: int = 1) -> int:
    """``max(horizon, floor(4 (n / 100) ** (2/9)))``: Newey and West's (1994) rule, never below the horizon."""
    return max(int(horizon), int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))))


@dataclasses.dataclass(frozen=True)
class DieboldMariano:
    mean_difference: float  # mean of loss_a - loss_b (negative: a has the smaller loss)
    statistic: float
    p_value: float  # two-sided, normal
    n: int
    lags: int

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int = 1, lags: int | None = None
                    ) -> DieboldMariano:
    """Diebold-Mariano test of equal expected loss on paired per-bar losses (pairs with a NaN are dropped),
    with a Newey-West variance (Bartlett weights ``1 - j / (L + 1)``, ``L`` = :func:`newey_west_lags`)."""
    from scipy.stats import norm

    a = np.asarray(loss_a, dtype=np.float64)
    b = np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"diebold_mariano: losses of shapes {a.shape} and {b.shape}: need paired series")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = d.shape[0]
    if n < 10:
        return DieboldMariano(math.nan, math.nan, math.nan, n, 0)
    lag = newey_west_lags(n, horizon) if lags is None else int(lags)
    u = d - d.mean()
    var = float(u @ u / n)
    for j in range(1, min(lag, n - 1) + 1):
        var += 2.0 * (1.0 - j / (lag + 1.0)) * float(u[j:] @ u[:-j] / n)
    if not var > 0:
        return DieboldMariano(float(d.mean()), math.nan, math.nan, n, lag)
    stat = float(d.mean() / math.sqrt(var / n))
    return DieboldMariano(float(d.mean()), stat, float(2.0 * norm.sf(abs(stat))), n, lag)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out
