"""Reading back what the market assets stored: the candles and funding of one series (one home for both).

The readers return empty frames with the right columns when the table was never written (a source without
funding, a warehouse before its first ingest), so every caller treats "nothing stored" one way.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

OHLCV = ("open", "high", "low", "close", "volume")


def load_candles(warehouse, symbol: str, interval: str, since: dt.datetime | dt.date | str | None = None,
                 until: dt.datetime | dt.date | str | None = None) -> pl.DataFrame:
    """``ts, open, high, low, close, volume`` of one series in ts order; only bars in [since, until) when given."""
    if not warehouse.table_exists("raw.candles"):
        return pl.DataFrame(schema={"ts": pl.Datetime("us"), **{c: pl.Float64 for c in OHLCV}})
    where, params = "symbol = ? and interval = ?", [symbol, interval]
    if since is not None:
        where, params = where + " and ts >= cast(? as timestamp)", [*params, since]
    if until is not None:
        where, params = where + " and ts < cast(? as timestamp)", [*params, until]
    return warehouse.query(f"select ts, {', '.join(OHLCV)} from raw.candles where {where} order by ts", params)


def candle_arrays(candles: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(open times in ms as int64, OHLCV [n, 5] as float64) of a :func:`load_candles` frame."""
    ts_ms = candles["ts"].cast(pl.Datetime("ms")).cast(pl.Int64).to_numpy().astype(np.int64)
    return ts_ms, candles.select(OHLCV).to_numpy().astype(np.float64)


def load_funding(warehouse, symbol: str) -> pl.DataFrame:
    """``ts, funding_rate`` of one symbol in ts order (empty when no funding was ingested)."""
    if not warehouse.table_exists("raw.funding"):
        return pl.DataFrame(schema={"ts": pl.Datetime("us"), "funding_rate": pl.Float64})
    return warehouse.query("select ts, funding_rate from raw.funding where symbol = ? order by ts", [symbol])
