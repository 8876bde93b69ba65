"""Recursive indicators (EMA, Wilder smoothing: RSI, ATR, ADX; OBV) as numba passes over float64 arrays.

Arrays in, arrays out; NaN marks rows before an indicator is defined (the
caller turns that warm-up prefix into NULL). One pass per family: every EMA of
one input in a single loop, RSI's two smoothings in one loop, +DM/-DM/TR
smoothing, DI, DX and ADX in one loop.

Seeds follow TA-Lib: an EMA or Wilder average starts at the simple mean of its
first n inputs. The arithmetic reproduces the polars expressions these kernels
replaced bit for bit: seeds are Kahan sums (polars' ``rolling_mean``), and a
step is ``y += (x - y) * (alpha / ((1 - alpha) + alpha))`` (polars'
``ewm_mean(adjust=False)``), which is the EMA recursion
``y[t] = y[t-1] + alpha (x[t] - y[t-1])`` up to the rounding of that factor.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _kahan_sum(x: np.ndarray, start: int, stop: int) -> float:
    total = 0.0
    err = 0.0
    for i in range(start, stop):
        y = x[i] - err
        new = total + y
        err = (new - total) - y
        total = new
    return total


@njit(cache=True)
def _step_factor(alpha: float) -> float:
    return alpha / ((1.0 - alpha) + alpha)


@njit(cache=True)
def seeded_ewm(x: np.ndarray, first: int, n_seed: int, alpha: float, seed_divisor: float) -> np.ndarray:
    """y[s] = sum(x[first..s]) / seed_divisor with s = first + n_seed - 1; then y[t] = y[t-1] + alpha (x[t] - y[t-1]).

    NaN before s. ``x`` must be defined from ``first`` on. EMA and Wilder
    averages use seed_divisor = n_seed (the mean of the first n values).
    """
    n = x.size
    out = np.full(n, np.nan)
    seed_at = first + n_seed - 1
    if seed_at >= n:
        return out
    y = _kahan_sum(x, first, seed_at + 1) / seed_divisor
    out[seed_at] = y
    r = _step_factor(alpha)
    for t in range(seed_at + 1, n):
        y = y + (x[t] - y) * r
        out[t] = y
    return out


@njit(cache=True)
def ema(x: np.ndarray, n: int, first: int) -> np.ndarray:
    """TA-Lib EMA(n) of x[first..]: alpha = 2/(n+1), seeded with the SMA of the first n values."""
    return seeded_ewm(x, first, n, 2.0 / (n + 1), float(n))


@njit(cache=True)
def ema_family(x: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """EMA(n) of x for every n in ``spans`` (ascending) in one pass; row k is EMA(spans[k]) (same values as ``ema``)."""
    n = x.size
    k_count = spans.size
    out = np.full((k_count, n), np.nan)
    y = np.zeros(k_count)
    r = np.zeros(k_count)
    for k in range(k_count):
        span = spans[k]
        r[k] = _step_factor(2.0 / (span + 1))
        if span - 1 < n:
            y[k] = _kahan_sum(x, 0, span) / span
            out[k, span - 1] = y[k]
            # run each EMA alone up to the last seed, then all together (independent chains, no branches)
            for t in range(span, min(spans[k_count - 1], n)):
                y[k] = y[k] + (x[t] - y[k]) * r[k]
                out[k, t] = y[k]
    for t in range(spans[k_count - 1], n):
        xt = x[t]
        for k in range(k_count):
            y[k] = y[k] + (xt - y[k]) * r[k]
            out[k, t] = y[k]
    return out


@njit(cache=True)
def rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder RSI (TA-Lib): 100 * avg_gain / (avg_gain + avg_loss), 0 where both are 0.

    gain[t] = max(close[t] - close[t-1], 0), loss[t] = max(close[t-1] - close[t], 0)
    (0 on the first bar); averages are Wilder smoothings (alpha 1/n) seeded
    with the mean of gains 1..n. Rows before the seed (0..n-1) hold 0; the
    caller stores them as NULL (its warm-up prefix).
    """
    size = close.size
    gain = np.zeros(size)
    loss = np.zeros(size)
    for t in range(1, size):
        change = close[t] - close[t - 1]
        if change > 0:
            gain[t] = change
        elif change < 0:
            loss[t] = -change
    out = np.zeros(size)
    if n >= size:
        return out
    avg_gain = _kahan_sum(gain, 1, n + 1) / n
    avg_loss = _kahan_sum(loss, 1, n + 1) / n
    r = _step_factor(1.0 / n)
    for t in range(n, size):
        if t > n:
            avg_gain = avg_gain + (gain[t] - avg_gain) * r
            avg_loss = avg_loss + (loss[t] - avg_loss) * r
        total = avg_gain + avg_loss
        out[t] = 100.0 * (avg_gain / total) if total != 0 else 0.0
    return out


@njit(cache=True)
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """TR[t] = max(high - low, |high - close[t-1]|, |low - close[t-1]|); NaN on the first bar."""
    n = close.size
    out = np.full(n, np.nan)
    for t in range(1, n):
        prev = close[t - 1]
        out[t] = max(high[t] - low[t], abs(high[t] - prev), abs(low[t] - prev))
    return out


@njit(cache=True)
def atr(tr: np.ndarray, n: int) -> np.ndarray:
    """Wilder ATR (TA-Lib): alpha 1/n over TR[1..], seeded with the mean of TR[1..n]."""
    return seeded_ewm(tr, 1, n, 1.0 / n, float(n))


@njit(cache=True)
def directional_index(high: np.ndarray, low: np.ndarray, tr: np.ndarray, n: int):
    """(+DI, -DI, ADX) as TA-Lib defines them, in one pass.

    +DM[t] = up if up > 0 and up > down else 0, -DM[t] = down if down > 0 and
    down > up else 0 (up = high[t] - high[t-1], down = low[t-1] - low[t]).
    +DM, -DM and TR are smoothed as Wilder running sums seeded with the sum of
    bars 1..n-1 (S[t] = S[t-1] - S[t-1]/n + x[t], kept here divided by n);
    DI = 100 * S_DM / S_TR from bar n (0 where S_TR = 0);
    DX = 100 * |+DI - -DI| / (+DI + -DI) (0 where the sum is 0);
    ADX = Wilder average of DX seeded with the mean of DX over bars n..2n-1.
    """
    size = high.size
    plus_di = np.full(size, np.nan)
    minus_di = np.full(size, np.nan)
    adx = np.full(size, np.nan)
    if n - 1 >= size:
        return plus_di, minus_di, adx
    plus_dm = np.zeros(size)
    minus_dm = np.zeros(size)
    for t in range(1, size):
        up = high[t] - high[t - 1]
        down = low[t - 1] - low[t]
        if up > 0 and up > down:
            plus_dm[t] = up
        if down > 0 and down > up:
            minus_dm[t] = down
    r = _step_factor(1.0 / n)
    inv_n = 1.0 / n  # the seed sums are scaled by 1/n (as a product, like the polars expression this replaced)
    s_plus = _kahan_sum(plus_dm, 1, n) * inv_n
    s_minus = _kahan_sum(minus_dm, 1, n) * inv_n
    s_tr = _kahan_sum(tr, 1, n) * inv_n
    dx = np.zeros(size)
    adx_seed_at = 2 * n - 1
    adx_value = 0.0
    for t in range(n, size):
        s_plus = s_plus + (plus_dm[t] - s_plus) * r
        s_minus = s_minus + (minus_dm[t] - s_minus) * r
        s_tr = s_tr + (tr[t] - s_tr) * r
        p = (100.0 * s_plus) / s_tr if s_tr != 0 else 0.0
        m = (100.0 * s_minus) / s_tr if s_tr != 0 else 0.0
        plus_di[t] = p
        minus_di[t] = m
        dx[t] = (100.0 * abs(p - m)) / (p + m) if p + m != 0 else 0.0
        if t == adx_seed_at:
            adx_value = _kahan_sum(dx, n, adx_seed_at + 1) / n
            adx[t] = adx_value
        elif t > adx_seed_at:
            adx_value = adx_value + (dx[t] - adx_value) * r
            adx[t] = adx_value
    return plus_di, minus_di, adx


@njit(cache=True)
def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-balance volume (TA-Lib): OBV[0] = volume[0], OBV[t] = OBV[t-1] + sign(close[t] - close[t-1]) * volume[t]."""
    n = close.size
    out = np.empty(n)
    total = 0.0
    for t in range(n):
        if t == 0:
            step = volume[0]
        else:
            change = close[t] - close[t - 1]
            step = volume[t] if change > 0 else (-volume[t] if change < 0 else 0.0 * volume[t])
        total = total + step
        out[t] = total
    return out
