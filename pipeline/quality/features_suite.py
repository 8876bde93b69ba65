"""Great-expectations suite for the model-input columns of features.candle_features.

Past warm-up every model input is finite and inside its range, and each day
has exactly one feature row per staged candle. Run with
:func:`validate_model_inputs`; Dagster runs it as a blocking check.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.quality.runner import SuiteOutcome, gx, run_expectations
from pipeline.warehouse import Warehouse

# Bounds that hold by construction; every other input only has to be finite.
FINITE = 1e12
RANGES: dict[str, tuple[float, float]] = {
    "rsi_14": (0.0, 100.0),
    "stoch_k_14": (0.0, 100.0),
    "stoch_d_3": (0.0, 100.0),
    "plus_di_14": (0.0, 100.0),
    "minus_di_14": (0.0, 100.0),
    "adx_14": (0.0, 100.0),
    "htf1_rsi_14": (0.0, 100.0),
    "htf2_rsi_14": (0.0, 100.0),
    "close_pos": (0.0, 1.0),
    "body_ratio": (-1.0, 1.0),
    "obv_slope_20": (-1.0, 1.0),
    "range_pct": (0.0, FINITE),
    "volume_ratio_20": (0.0, FINITE),
    "volume_cv_20": (0.0, FINITE),
    "realized_vol_20": (0.0, FINITE),
    "parkinson_vol_20": (0.0, FINITE),
    "bb_width_20": (0.0, FINITE),
    "atr_pct_14": (0.0, FINITE),
    "htf1_realized_vol_20": (0.0, FINITE),
    "htf2_realized_vol_20": (0.0, FINITE),
}


def model_input_expectations(columns: list[str] = MODEL_INPUT_COLUMNS) -> list:
    """Not null (NaN counts as null) and inside its range (inf never is), per column."""
    expectations: list = []
    for column in columns:
        low, high = RANGES.get(column, (-FINITE, FINITE))
        expectations.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=column))
        expectations.append(gx.expectations.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high))
    return expectations


def rows_per_day_expectations() -> list:
    """One feature row per staged candle on every (symbol, interval, day)."""
    return [
        gx.expectations.ExpectColumnPairValuesToBeEqual(column_A="feature_rows", column_B="candle_rows"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="feature_rows", min_value=1),
    ]


def validate_model_inputs(features: pl.DataFrame, daily_counts: pl.DataFrame) -> SuiteOutcome:
    """Run both suites: ``features`` (key columns, is_warmup, model inputs) and ``daily_counts``
    (symbol, interval, day, feature_rows, candle_rows). Warm-up rows are skipped."""
    missing = [c for c in ["is_warmup", *MODEL_INPUT_COLUMNS] if c not in features.columns]
    if missing:
        raise ValueError(f"features frame lacks column(s) {', '.join(missing)}")
    warm = features.filter(~pl.col("is_warmup"))
    keys = [c for c in ("symbol", "interval", "ts") if c in warm.columns]
    outcomes = [run_expectations(warm, model_input_expectations(), "candle_features_model_inputs", keys)]
    if daily_counts.height:
        outcomes.append(
            run_expectations(
                daily_counts, rows_per_day_expectations(), "candle_features_rows_per_day", ["symbol", "interval", "day"]
            )
        )
    return SuiteOutcome(
        suite_name="candle_features",
        success=all(o.success for o in outcomes),
        evaluated=sum(o.evaluated for o in outcomes),
        failures=[f for o in outcomes for f in o.failures],
    )


def model_input_frames(
    warehouse: Warehouse, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The frames :func:`validate_model_inputs` checks, for ``start <= ts < end`` (all rows if None):
    the model inputs of features.candle_features, and feature vs staged-candle rows per day (bars the
    fill gap policy added, ``is_filled``, have no staged candle and are not counted)."""
    where, params = "true", []
    if start is not None and end is not None:
        strip = lambda t: t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t  # noqa: E731
        where, params = "ts >= ? and ts < ?", [strip(start), strip(end)]
    columns = ", ".join(["symbol", '"interval"', "ts", "is_warmup", *MODEL_INPUT_COLUMNS])
    features = warehouse.query(f"select {columns} from features.candle_features where {where}", params)
    daily = warehouse.query(
        f"""
        with f as (select symbol, "interval", cast(ts as date) as day, count(*) as feature_rows
                   from features.candle_features where ({where}) and not is_filled group by all),
             c as (select symbol, "interval", cast(ts as date) as day, count(*) as candle_rows
                   from staging.stg_candles where {where} group by all)
        select coalesce(f.symbol, c.symbol) as symbol, coalesce(f."interval", c."interval") as "interval",
               coalesce(f.day, c.day) as day, coalesce(feature_rows, 0) as feature_rows,
               coalesce(candle_rows, 0) as candle_rows
        from f full join c using (symbol, "interval", day)
        order by 1, 2, 3
        """,
        params * 2,
    )
    return features, daily
