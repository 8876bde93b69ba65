"""Shared fixtures for the feature tests: real candles, warehouses built once per session.

dbt invocations cost seconds each, so the BTCUSDT 1h warehouse is built once
and shared; helpers are handed out as fixtures (test modules cannot import
this file under --import-mode=importlib).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.dbt_runner.invoke import run_dbt
from pipeline.market.schemas import CANDLE_SCHEMA, conform
from pipeline.warehouse import Warehouse

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("CONVTRADE_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def read_real_candles(symbol: str = "BTCUSDT", interval: str = "60") -> pl.DataFrame:
    """A real Bybit export from ../shared/data as a CANDLE_SCHEMA frame."""
    path = SHARED_DATA / f"bybit_{symbol}_{interval}.csv.gz"
    if not path.exists():
        pytest.skip(f"real market data not found at {path}")
    frame = pl.read_csv(path).with_columns(
        symbol=pl.lit(symbol),
        interval=pl.lit(interval),
        ts=pl.from_epoch("ts", time_unit="ms").cast(pl.Datetime("us")),
        source=pl.lit("files"),
    )
    if "turnover" not in frame.columns:
        frame = frame.with_columns(turnover=pl.lit(None, pl.Float64))
    return conform(frame, CANDLE_SCHEMA, str(path))


def random_walk_candles(
    symbol: str, start: dt.datetime, bars: int, interval: str = "60", seed: int = 0
) -> pl.DataFrame:
    """Seeded OHLC-consistent random-walk candles (for windows the real files do not cover)."""
    rng = np.random.default_rng(seed)
    step = {"1": 1, "60": 60}[interval]
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, bars)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, bars)))
    volume = rng.lognormal(3, 0.5, bars)
    return pl.DataFrame(
        {
            "symbol": symbol,
            "interval": interval,
            "ts": [start + dt.timedelta(minutes=step * i) for i in range(bars)],
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "turnover": volume * close,
            "source": "synthetic",
        }
    ).pipe(conform, CANDLE_SCHEMA, "random walk")


def load_candles(path: Path, candles: pl.DataFrame) -> Warehouse:
    """A fresh warehouse file at ``path`` holding ``candles`` in raw.candles."""
    warehouse = Warehouse(path)
    warehouse.ensure_schema()
    warehouse.replace_rows("raw.candles", candles, "true")
    return warehouse


def table(warehouse: Warehouse, name: str) -> pl.DataFrame:
    keys = "symbol, interval, ts" + (", horizon" if name.endswith("labels") else "")
    return warehouse.query(f"select * from {name} order by {keys}")


@pytest.fixture(scope="session")
def real_orderbook():
    return read_real_orderbook


@pytest.fixture(scope="session")
def real_funding():
    return read_real_funding


@pytest.fixture(scope="session")
def real_candles():
    return read_real_candles


@pytest.fixture(scope="session")
def helpers():
    """Plain helper functions for test modules."""
    return {"load_candles": load_candles, "table": table, "random_walk": random_walk_candles}


def read_real_funding(symbol: str = "BTCUSDT") -> pl.DataFrame:
    path = SHARED_DATA / f"bybit_{symbol}_funding.csv.gz"
    return pl.read_csv(path).select(
        symbol=pl.lit(symbol),
        ts=pl.from_epoch("ts", time_unit="ms").cast(pl.Datetime("us")),
        funding_rate=pl.col("funding_rate").cast(pl.Float64),
        source=pl.lit("files"),
    )


def read_real_orderbook() -> pl.DataFrame:
    """The real top-5 order-book snapshots (78 symbols, 2024-07-01 08:37-08:38) as raw.orderbook rows."""
    path = SHARED_DATA / "bybit_linear_orderbook_top5_20240701.csv.gz"
    levels = range(1, 6)
    frame = pl.read_csv(path)
    return frame.select(
        "symbol",
        ts=pl.from_epoch("ts", time_unit="ms").cast(pl.Datetime("us")),
        bid_px=pl.concat_list([f"bid_px_{i}" for i in levels]).cast(pl.List(pl.Float64)),
        bid_sz=pl.concat_list([f"bid_sz_{i}" for i in levels]).cast(pl.List(pl.Float64)),
        ask_px=pl.concat_list([f"ask_px_{i}" for i in levels]).cast(pl.List(pl.Float64)),
        ask_sz=pl.concat_list([f"ask_sz_{i}" for i in levels]).cast(pl.List(pl.Float64)),
        source=pl.lit("files"),
    ).unique(["symbol", "ts"], keep="last", maintain_order=True)


@pytest.fixture(scope="session")
def btc_warehouse(tmp_path_factory) -> Warehouse:
    """Real BTCUSDT 1h candles, funding and order-book snapshots, fully built by dbt."""
    candles = read_real_candles("BTCUSDT", "60")
    warehouse = load_candles(tmp_path_factory.mktemp("btc") / "warehouse.duckdb", candles)
    warehouse.replace_rows("raw.funding", read_real_funding("BTCUSDT"), "true")
    warehouse.replace_rows("raw.orderbook", read_real_orderbook(), "true")
    run_dbt(["build"], warehouse.path)
    return warehouse


def assert_frames_equal(left: pl.DataFrame, right: pl.DataFrame, what: str, rtol: float = 1e-12) -> None:
    """Same rows and keys; floats equal to ``rtol`` (NULL and NaN in the same places), the rest exactly."""
    assert left.columns == right.columns, f"{what}: columns differ"
    assert left.height == right.height, f"{what}: {left.height} rows vs {right.height}"
    for name in left.columns:
        a, b = left[name], right[name]
        if a.dtype.is_float():
            x, y = a.to_numpy().astype(float), b.to_numpy().astype(float)
            same_nan = np.isnan(x) == np.isnan(y)
            close = np.isclose(x, y, rtol=rtol, atol=0.0, equal_nan=True)
            bad = ~(same_nan & close)
        else:
            bad = ~(a.eq_missing(b)).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            key = {k: left[k][i] for k in ("symbol", "interval", "ts", "horizon") if k in left.columns}
            raise AssertionError(f"{what}: column {name} differs on {int(bad.sum())} rows, first {key}: {a[i]!r} vs {b[i]!r}")


@pytest.fixture(scope="session")
def compare():
    return assert_frames_equal
