"""CNN-TA indicator images: every row against TA-Lib or a loop, scaling fitted on training rows only."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.encodings.indicator_image import ROWS, IndicatorImage, fit_indicator_scaling


def _ohlcv(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.001, n))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.01, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.01, n))
    return np.stack([o, h, lo, c, rng.uniform(1, 3, n)])  # (5, n)


def _ema(x, n, first=0):
    out = np.full(x.size, np.nan)
    out[first + n - 1] = np.mean(x[first:first + n])
    a = 2 / (n + 1)
    for t in range(first + n, x.size):
        out[t] = out[t - 1] + a * (x[t] - out[t - 1])
    return out


def _loop_cmo(c, n):
    out = np.full(c.size, np.nan)
    for t in range(n, c.size):
        d = np.diff(c[t - n:t + 1])
        up, down = d[d > 0].sum(), -d[d < 0].sum()
        out[t] = 100 * (up - down) / (up + down) if up + down > 0 else 0.0
    return out


def test_rows_match_talib_and_loops():
    talib = pytest.importorskip("talib")
    w = _ohlcv(64, seed=3)
    img = IndicatorImage().encode(w[None])[0, 0]
    assert img.shape == (len(ROWS), 15) == (15, 15)
    o, h, lo, c, _ = w
    last = slice(64 - 15, 64)
    ref = {}
    for n in (7, 14, 21):
        ref[f"rsi_{n}"] = talib.RSI(c, n)
        ref[f"willr_{n}"] = talib.WILLR(h, lo, c, n)
        ref[f"cmo_{n}"] = _loop_cmo(c, n)
        ref[f"roc_{n}"] = talib.ROC(c, n)
    macd = _ema(c, 12) - _ema(c, 26)
    ref["macd_hist_pct"] = 100 * (macd - _ema(macd, 9, first=25)) / c
    ref["cci_20"] = talib.CCI(h, lo, c, 20)
    ref["ema_dist_20"] = 100 * (c / talib.EMA(c, 20) - 1)
    for k, name in enumerate(ROWS):
        np.testing.assert_allclose(img[k], ref[name][last], rtol=1e-4, atol=1e-4, err_msg=name)


def test_image_reads_only_its_window_and_rejects_gaps():
    w = _ohlcv(80, seed=1)
    enc = IndicatorImage()
    full = enc.encode(w[None])
    np.testing.assert_array_equal(full, enc.encode(w[None, :, -64:]))  # older bars are not read
    bad = w[None, :, -64:].copy()
    bad[0, 3, 10] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        enc.encode(bad)
    with pytest.raises(ValueError, match="too short"):
        IndicatorImage(input_length=40)


def test_scaling_is_fitted_on_training_rows_only():
    rng = np.random.default_rng(5)
    raw = rng.normal(0, 1, (200, 1, 15, 15)).astype(np.float32) * np.arange(1, 16).reshape(1, 1, 15, 1)
    train = np.arange(0, 120)
    scaling = fit_indicator_scaling(raw, train)
    changed = raw.copy()
    changed[120:] *= 1000.0  # the test rows move: the fitted statistics must not
    again = fit_indicator_scaling(changed, train)
    np.testing.assert_array_equal(scaling.low, again.low)
    np.testing.assert_array_equal(scaling.high, again.high)
    moved = raw.copy()
    moved[:120] += 5.0
    assert not np.allclose(fit_indicator_scaling(moved, train).low, scaling.low)
    for k in range(15):
        vals = raw[train, 0, k].ravel()
        assert scaling.low[k] == pytest.approx(np.percentile(vals, 1), rel=1e-5)
        assert scaling.high[k] == pytest.approx(np.percentile(vals, 99), rel=1e-5)
    scaled = scaling.apply(raw)
    assert scaled.min() >= 0.0 and scaled.max() <= 1.0
    # the encoder takes the fitted scaling and applies exactly it
    w = _ohlcv(64, seed=2)[None]
    fitted = fit_indicator_scaling(IndicatorImage().encode(w), [0])
    np.testing.assert_allclose(IndicatorImage(scaling=fitted).encode(w), fitted.apply(IndicatorImage().encode(w)))
    with pytest.raises(ValueError, match="no training rows"):
        fit_indicator_scaling(raw, [])
