"""The named choices that settings accept, and the symbol rule: one home for each vocabulary.

The settings (:mod:`pipeline.config`) validate against these names and the
domains that act on them (sources, features, losses, augmentations) import
them from here, so neither imports the other for a list of words.
"""

from __future__ import annotations

import re

SOURCES = ("synthetic", "files", "bybit")
# What the features do at a missing bar (pipeline.features.candle_features): "segment" restarts every
# indicator after it; "fill" fills gaps of at most max_fill_bars bars with flat candles first.
GAP_POLICIES = ("segment", "fill")
BYBIT_CATEGORIES = ("linear", "spot", "inverse")
# Training (pipeline.training.losses / augment)
CLASS_WEIGHTINGS = ("balanced", "focal", "none")
AUGMENTATIONS = ("jitter", "scaling", "time_warp", "window_slice")

# Exchange symbols are upper-case letters and digits (BTCUSDT, 1000PEPEUSDT); nothing else may reach a
# file name, a URL or a report path.
SYMBOL_PATTERN = re.compile(r"[A-Z0-9]+")


def symbol_problem(symbol: str) -> str | None:
    """Why ``symbol`` is not an exchange symbol, or None when it is one."""
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
        return f"{symbol!r} is not an exchange symbol: use upper-case letters and digits only, e.g. BTCUSDT"
    return None
