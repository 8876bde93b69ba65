"""features.candle_features: one row per (symbol, interval, ts), every indicator exact.

A dbt Python model (runs in-process on dbt-duckdb) around
pipeline.features.candle_features.features_for_window; see the model's docs
for why Python and how the incremental run stays exact.
"""

import os


def model(dbt, session):
    dbt.config(materialized="incremental", incremental_strategy="replace_range")
    from pipeline.features.candle_features import CANDLE_INPUT_COLUMNS, features_for_window

    start = end = ""
    if dbt.is_incremental:
        # Recursions run over each series' whole history; only the run's window is
        # returned (the replace_range strategy deletes and inserts exactly this window).
        # Bounds: dbt vars start/end (via the model's yml config), else the
        # environment variables the Dagster asset sets (see replace_range.sql).
        start = dbt.config.get("start") or os.environ.get("CONVTRADE_FEATURES_START", "")
        end = dbt.config.get("end") or os.environ.get("CONVTRADE_FEATURES_END", "")
    columns = ", ".join(f'"{name}"' for name in CANDLE_INPUT_COLUMNS)
    # only the columns the features use, in series order, via Arrow into polars
    candles = dbt.ref("stg_candles").select(columns).order('symbol, "interval", ts').pl()
    return features_for_window(
        candles,
        start or None,
        end or None,
        funding=dbt.ref("stg_funding").pl(),
        open_interest=dbt.ref("stg_open_interest").pl(),
        orderbook=dbt.ref("stg_orderbook").pl(),
    )
