"""The synthetic market's planted regime change (setting regime_shift): a volatility and drift shift from a chosen day."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from pipeline.config import Settings, parse_regime_shift
from pipeline.market.ingest import build_source
from pipeline.market.synthetic import SyntheticSource, _profile

NOW = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
SHIFT = dt.datetime(2025, 2, 1)
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def candles(source, symbol):
    return source.candles(symbol, "60", dt.datetime(2025, 1, 1), NOW.replace(tzinfo=None))


def test_the_shift_scales_returns_and_adds_drift_from_its_day_only():
    plain = SyntheticSource(SYMBOLS, "2025-01-01", now=lambda: NOW)
    shifted = SyntheticSource(SYMBOLS, "2025-01-01", now=lambda: NOW, regime_shift=(SHIFT.date(), ("ETHUSDT",)),
                              regime_shift_volatility=2.0, regime_shift_drift=-0.5)
    assert candles(plain, "BTCUSDT").equals(candles(shifted, "BTCUSDT"))  # a symbol not listed is untouched
    a, b = candles(plain, "ETHUSDT"), candles(shifted, "ETHUSDT")
    assert a.filter(pl.col("ts") < SHIFT).equals(b.filter(pl.col("ts") < SHIFT))  # nothing before the day moves
    # from the day on, each hourly log return is 2x the unshifted one plus the drift: -0.5 daily sds a day
    after_a, after_b = (np.log(f.filter(pl.col("ts") >= SHIFT - dt.timedelta(hours=1))["close"].to_numpy())
                        for f in (a, b))
    want = 2.0 * np.diff(after_a) - 0.5 * _profile("ETHUSDT")[1] / 24  # the symbol's daily standard deviation
    np.testing.assert_allclose(np.diff(after_b), want, rtol=0, atol=1e-12)
    assert (b["high"] >= b[["open", "close"]].max_horizontal()).all()


def test_the_setting_reaches_the_source_and_is_checked():
    settings = Settings(symbols=SYMBOLS, regime_shift="2025-02-01,ETHUSDT", regime_shift_volatility=3.0)
    assert parse_regime_shift(settings.regime_shift, settings.symbols) == (SHIFT.date(), ("ETHUSDT",))
    assert parse_regime_shift("2025-02-01", SYMBOLS) == (SHIFT.date(), SYMBOLS)
    assert parse_regime_shift("", SYMBOLS) is None
    source = build_source(settings, now=lambda: NOW)
    assert source._shift[1:] == ((False, True), 3.0, -0.5)
    with pytest.raises(ValueError, match="CONVTRADE_REGIME_SHIFT=.*a day like"):
        Settings(regime_shift="February")
    with pytest.raises(ValueError, match="DOGEUSDT not in CONVTRADE_SYMBOLS"):
        Settings(symbols=SYMBOLS, regime_shift="2025-02-01,DOGEUSDT")
    with pytest.raises(ValueError, match="CONVTRADE_REGIME_SHIFT_VOLATILITY"):
        Settings(regime_shift_volatility=0.0)
    with pytest.raises(ValueError, match="CONVTRADE_REGIME_SHIFT_DRIFT"):
        Settings(regime_shift_drift=float("nan"))
