"""Backtest fixtures: candles with model inputs and labels shaped like features.candle_features / features.labels.

The label rows follow the one definition (forward return over (t, t + 1],
direction beyond label_spec().direction_threshold); ``signal`` plants a model
input that predicts the next return, so a working learner has something to find.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from pipeline.backtest.strategies import LabelledFeatures
from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.features.labels import direction_to_class, label_spec
from pipeline.market.schemas import CANDLE_SCHEMA, FUNDING_SCHEMA
from pipeline.warehouse import Warehouse

H = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01
WARMUP = 30


@dataclasses.dataclass
class Market:
    candles: pl.DataFrame
    inputs: np.ndarray  # (n, len(MODEL_INPUT_COLUMNS))
    is_warmup: np.ndarray
    fwd_return: np.ndarray
    direction: np.ndarray  # -1 / 0 / +1, NaN unknown

    def labelled(self) -> LabelledFeatures:
        return LabelledFeatures(self.inputs.copy(), ~self.is_warmup, self.fwd_return.copy(),
                                direction_to_class(self.direction), 1)


def make_market(symbol: str, n: int, seed: int, signal: float = 0.0, vol: float = 0.006) -> Market:
    """Hourly candles whose next return is ``signal * x[t] + noise`` for the first model input ``x``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(MODEL_INPUT_COLUMNS)))
    r = np.r_[0.0, signal * x[:-1, 0] + rng.normal(0, vol, n - 1)]
    c = 40_000 * np.exp(np.cumsum(r))
    o = np.r_[40_000.0, c[:-1]]
    ts = (START_MS + np.arange(n) * H) * 1000
    candles = pl.DataFrame(
        {"symbol": symbol, "interval": "60", "ts": pl.Series(ts).cast(pl.Datetime("us")), "open": o,
         "high": np.maximum(o, c) * 1.002, "low": np.minimum(o, c) * 0.998, "close": c,
         "volume": rng.uniform(100, 200, n), "turnover": None, "source": "test"}
    ).cast(CANDLE_SCHEMA)
    warm = np.arange(n) < WARMUP
    x[warm] = np.nan  # warm-up values are NULL
    fwd = np.r_[c[1:] / c[:-1] - 1.0, np.nan]
    thr = label_spec().direction_threshold
    direction = np.where(np.isnan(fwd), np.nan, np.where(fwd > thr, 1.0, np.where(fwd < -thr, -1.0, 0.0)))
    return Market(candles, x, warm, fwd, direction)


def funding_frame(symbol: str, n_bars: int, rate: float = 0.0001) -> pl.DataFrame:
    ts = (START_MS + np.arange(0, n_bars, 8) * H) * 1000
    return pl.DataFrame(
        {"symbol": symbol, "ts": pl.Series(ts).cast(pl.Datetime("us")), "funding_rate": rate, "source": "test"}
    ).cast(FUNDING_SCHEMA)


def store_market(wh: Warehouse, market: Market, features: bool = True) -> None:
    """raw.candles and raw.funding rows; with ``features``, also features.candle_features / features.labels rows."""
    symbol = market.candles["symbol"][0]
    n = market.candles.height
    wh.replace_rows("raw.candles", market.candles, "symbol = ?", [symbol])
    wh.replace_rows("raw.funding", funding_frame(symbol, n), "symbol = ?", [symbol])
    if not features:
        return
    keys = market.candles.select("symbol", "interval", "ts")
    feats = keys.with_columns(pl.Series("is_warmup", market.is_warmup),
                              *[pl.Series(name, market.inputs[:, j]).fill_nan(None)
                                for j, name in enumerate(MODEL_INPUT_COLUMNS)])
    labels = keys.with_columns(
        horizon=pl.lit(1, pl.Int32),
        fwd_return=pl.Series(market.fwd_return).fill_nan(None),
        direction=pl.Series(market.direction).fill_nan(None).cast(pl.Int8),
        fwd_volatility=pl.lit(None, pl.Float64),
    )
    with wh.connect() as con:
        for table, frame in (("features.candle_features", feats), ("features.labels", labels)):
            con.register("frame", frame)
            con.execute(f"create table if not exists {table} as select * from frame limit 0")
            con.execute(f"delete from {table} where symbol = ?", [symbol])
            con.execute(f"insert into {table} select * from frame")
            con.unregister("frame")


@pytest.fixture(scope="session")
def market_factory():
    return make_market


@pytest.fixture(scope="session")
def store_market_rows():
    return store_market


@pytest.fixture(scope="session")
def funding_rows():
    return funding_frame
