"""Which feature columns models read (the label horizons are in pipeline.features.labels).

Only scale-free, always-present columns are model inputs: raw price levels
(EMA values, bands, VWAP, OBV) and the optional market-structure columns
(funding, open interest, order book: absent for most history) stay in
``features.candle_features`` for analysis but are not fed to models.
"""

from __future__ import annotations

# Coarser timeframes joined as-of onto each base row (see candle_features.COARSER_INTERVALS).
HTF_FEATURES: tuple[str, ...] = ("log_ret", "rsi_14", "ema_dist_21", "realized_vol_20")

MODEL_INPUT_COLUMNS: list[str] = [
    "log_ret_1",
    "range_pct",
    "close_pos",
    "body_ratio",
    "volume_ratio_20",
    "volume_cv_20",
    "realized_vol_20",
    "parkinson_vol_20",
    "rsi_14",
    "macd_pct",
    "macd_signal_pct",
    "macd_hist_pct",
    "bb_pct_b_20",
    "bb_width_20",
    "atr_pct_14",
    "obv_slope_20",
    "vwap_dist_20",
    "ema_dist_9",
    "ema_dist_21",
    "ema_dist_50",
    "ema_dist_200",
    "stoch_k_14",
    "stoch_d_3",
    "plus_di_14",
    "minus_di_14",
    "adx_14",
    "kc_pos_20",
    *[f"htf{level}_{name}" for level in (1, 2) for name in HTF_FEATURES],
]

# Optional columns: NULL where the warehouse has no funding / open-interest / order-book data.
MARKET_STRUCTURE_COLUMNS: list[str] = [
    "funding_rate",
    "oi_log_change",
    "ob_spread_bps",
    "ob_top_imbalance",
    "ob_depth_imbalance_5",
]

# The feature table models, baselines and the drift monitor read (built by dbt: dbt_features/models/features).
FEATURES_TABLE = "features.candle_features"


def not_a_model_row_sql(warehouse, alias: str = "") -> str:
    """SQL that is true on the rows of ``FEATURES_TABLE`` no model may read: warm-up rows and, where the table
    has the column (fill gap policy), the flat bars the fill made up (``is_filled``)."""
    prefix = f"{alias}." if alias else ""
    filled = warehouse.query(
        "select count(*) as n from information_schema.columns where table_schema || '.' || table_name = ? "
        "and column_name = 'is_filled'", [FEATURES_TABLE])["n"][0]
    return (f"({prefix}is_warmup or coalesce({prefix}is_filled, false))" if filled else f"{prefix}is_warmup")
