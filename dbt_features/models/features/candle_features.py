"""features.candle_features: one row per (symbol, interval, ts), every indicator exact.

A dbt Python model (runs in-process on dbt-duckdb) around
pipeline.features.candle_features.compute_candle_features; see the model's
docs for why Python and how the incremental run stays exact.
"""

import os

import polars as pl


def model(dbt, session):
    dbt.config(materialized="incremental", incremental_strategy="replace_range")
    from pipeline.features.candle_features import compute_candle_features

    features = compute_candle_features(
        dbt.ref("stg_candles").pl(),
        funding=dbt.ref("stg_funding").pl(),
        open_interest=dbt.ref("stg_open_interest").pl(),
        orderbook=dbt.ref("stg_orderbook").pl(),
    )
    if dbt.is_incremental:
        # Recursions ran over the whole history above; keep only the run's window
        # (the replace_range strategy deletes and inserts exactly this window).
        # Bounds: dbt vars start/end (via the model's yml config), else the
        # environment variables the Dagster asset sets (see replace_range.sql).
        start = dbt.config.get("start") or os.environ.get("CONVTRADE_FEATURES_START", "")
        end = dbt.config.get("end") or os.environ.get("CONVTRADE_FEATURES_END", "")
        if start:
            features = features.filter(pl.col("ts") >= pl.lit(start).str.to_datetime(time_unit="us"))
        if end:
            features = features.filter(pl.col("ts") < pl.lit(end).str.to_datetime(time_unit="us"))
    return features
