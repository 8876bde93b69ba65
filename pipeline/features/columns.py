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
