"""The great-expectations suite for raw candles, and the gap count reported beside it."""

from __future__ import annotations

import polars as pl

from pipeline.market.timegrid import grid_offset_expr, interval_ms
from pipeline.quality.runner import SuiteOutcome, gx, run_expectations

CANDLE_KEY = ("symbol", "interval", "ts")


def candle_expectations() -> list:
    """Not null, OHLC consistent, volume >= 0, unique key, ts on the interval grid."""
    E = gx.expectations
    columns = ["symbol", "interval", "ts", "open", "high", "low", "close", "volume", "source"]
    return [
        *[E.ExpectColumnValuesToNotBeNull(column=c) for c in columns],
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="open", or_equal=True),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="close", or_equal=True),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="open", column_B="low", or_equal=True),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="close", column_B="low", or_equal=True),
        E.ExpectColumnValuesToBeBetween(column="low", min_value=0, strict_min=True),
        E.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
        E.ExpectCompoundColumnsToBeUnique(column_list=list(CANDLE_KEY)),
        E.ExpectColumnValuesToBeInSet(column="grid_offset_ms", value_set=[0]),
    ]


def with_grid_offset(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``grid_offset_ms``: how far each ts lies off its interval's grid (0 when on it)."""
    return frame.with_columns(grid_offset_ms=grid_offset_expr(frame["interval"].unique().to_list()))


def validate_candles(frame: pl.DataFrame) -> SuiteOutcome:
    return run_expectations(with_grid_offset(frame), candle_expectations(), "raw_candles", key_columns=CANDLE_KEY)


def count_gaps(frame: pl.DataFrame) -> pl.DataFrame:
    """Per (symbol, interval): bars present, gaps (runs of missing bars) and missing bars between first and last."""
    rows = []
    for (symbol, interval), part in frame.sort("ts").group_by(["symbol", "interval"], maintain_order=True):
        step_us = interval_ms(interval) * 1000
        deltas = part["ts"].diff().dt.total_microseconds().drop_nulls()
        missing = (deltas // step_us - 1).clip(lower_bound=0)
        rows.append(
            {
                "symbol": symbol,
                "interval": interval,
                "bars": part.height,
                "gaps": int((missing > 0).sum()),
                "missing_bars": int(missing.sum()),
                "first_ts": part["ts"].min(),
                "last_ts": part["ts"].max(),
            }
        )
    schema = {"symbol": pl.String, "interval": pl.String, "bars": pl.Int64, "gaps": pl.Int64,
              "missing_bars": pl.Int64, "first_ts": pl.Datetime("us"), "last_ts": pl.Datetime("us")}
    return pl.DataFrame(rows, schema=schema)
