"""The typed frames every market source yields, so nothing downstream knows which one ran.

Timestamps are naive ``Datetime("us")`` holding UTC (the warehouse stores
``TIMESTAMP`` in UTC). ``ts`` is the candle open time.
"""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us")

CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "interval": pl.String,
    "ts": TS,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "turnover": pl.Float64,  # quote-currency value; null where the source lacks it
    "source": pl.String,
}

FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "ts": TS,  # settlement time
    "funding_rate": pl.Float64,  # per settlement period, as a fraction (0.0001 = 0.01%)
    "source": pl.String,
}

OPEN_INTEREST_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "interval": pl.String,
    "ts": TS,
    "open_interest": pl.Float64,  # contracts (base coin for linear)
    "source": pl.String,
}

ORDERBOOK_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "ts": TS,  # exchange snapshot time
    "bid_px": pl.List(pl.Float64),  # best first
    "bid_sz": pl.List(pl.Float64),
    "ask_px": pl.List(pl.Float64),  # best first
    "ask_sz": pl.List(pl.Float64),
    "source": pl.String,
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    """Select and cast ``frame`` to ``schema``; a missing column is a clear error."""
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}; have {', '.join(frame.columns)}")
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
