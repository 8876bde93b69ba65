"""features.candle_features: one row per (symbol, interval, ts), every indicator exact.

A dbt Python model (runs in-process on dbt-duckdb) around
pipeline.features.candle_features.features_for_window; see the model's docs
for why Python and how the incremental run stays exact. The gap policy
(CONVTRADE_GAP_POLICY, CONVTRADE_MAX_FILL_BARS) comes from
pipeline.config.Settings, as the Dagster process reads it (the dbt launcher
sets it from its --convtrade-gaps option when given).
"""

import os


def model(dbt, session):
    # on_schema_change=fail: a warehouse built by an older version (other columns) needs --full-refresh,
    # and says so, rather than losing the new columns silently
    dbt.config(materialized="incremental", incremental_strategy="replace_range", on_schema_change="fail",
               replace_source_keys=True)
    from pipeline.config import Settings
    from pipeline.features.candle_features import CANDLE_INPUT_COLUMNS, features_for_window

    settings = Settings.from_env()
    start = end = ""
    if dbt.is_incremental:
        # Recursions run over each series' whole history; only the run's window is
        # returned (the replace_range strategy deletes and inserts exactly this window,
        # plus the rows a filled gap adds before it).
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
        gap_policy=settings.gap_policy,
        max_fill_bars=settings.max_fill_bars,
    )
