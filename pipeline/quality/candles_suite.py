"""The great-expectations suite for raw candles, built from the candle rules, and the gap count beside it.

The rules themselves live once in :mod:`pipeline.market.schemas` (``CANDLE_RULES``); each of their
bounds becomes one GX expectation here, so the file reader, the ingest gate and this suite cannot drift.
"""

from __future__ import annotations

import polars as pl

from pipeline.market.schemas import CANDLE_KEY, CANDLE_RULES, CANDLE_VALUES, Bound
from pipeline.core.timegrid import count_gaps, grid_offset_expr
from pipeline.quality.runner import SuiteOutcome, gx, run_expectations

__all__ = ["CANDLE_KEY", "candle_expectations", "count_gaps", "validate_candles", "with_grid_offset"]


def bound_expectation(bound: Bound):
    """The GX expectation that ``bound`` (column >= other column or number) holds on every row."""
    E = gx.expectations
    if isinstance(bound.other, str):
        return E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=bound.column, column_B=bound.other, or_equal=not bound.strict
        )
    return E.ExpectColumnValuesToBeBetween(column=bound.column, min_value=bound.other, strict_min=bound.strict)


def candle_expectations() -> list:
    """Not null, every bound of every candle rule, unique key, ts on the interval grid."""
    E = gx.expectations
    columns = [*CANDLE_KEY, *CANDLE_VALUES, "source"]
    return [
        *[E.ExpectColumnValuesToNotBeNull(column=c) for c in columns],
        *[bound_expectation(bound) for rule in CANDLE_RULES for bound in rule.bounds],
        E.ExpectCompoundColumnsToBeUnique(column_list=list(CANDLE_KEY)),
        E.ExpectColumnValuesToBeInSet(column="grid_offset_ms", value_set=[0]),
    ]


def with_grid_offset(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``grid_offset_ms``: how far each ts lies off its interval's grid (0 when on it)."""
    return frame.with_columns(grid_offset_ms=grid_offset_expr(frame["interval"].unique().to_list()))


def validate_candles(frame: pl.DataFrame) -> SuiteOutcome:
    return run_expectations(with_grid_offset(frame), candle_expectations(), "raw_candles", key_columns=CANDLE_KEY)
