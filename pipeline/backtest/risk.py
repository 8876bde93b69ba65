"""Risk rules (stops, take profit, holding time, drawdown limits) and the ATR they use."""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np


@dataclasses.dataclass(frozen=True)
class RiskRules:
    """Per-trade exits and account-level drawdown limits; 0 switches a rule off.

    - ``stop_loss_pct``: exit when price moves this fraction against the entry.
    - ``stop_loss_atr``: exit at ``entry ∓ k × ATR`` (ATR of the last closed bar at entry).
    - ``trailing_atr``: exit at ``peak ∓ k × ATR`` (peak since entry, ATR of the last closed bar).
    - ``take_profit_pct``: exit when price moves this fraction in favour.
    - ``max_holding_bars``: exit at the open once the trade has been held this many bars.
    - ``daily_drawdown_limit``: after the equity falls this fraction below the
      day's starting equity, targets are halved for the rest of the (UTC) day.
    - ``weekly_drawdown_limit``: after the equity falls this fraction below the
      week's starting equity, the position is closed and no trade is opened
      until the next (Monday, UTC) week.
    - ``max_leverage``: the most ``|position value| / equity`` an order may
      open (fees and slippage included); targets beyond it are cut. 1 (no
      leverage) unless configured.
    When several stops are set the tightest one applies.
    """

    stop_loss_pct: float = 0.0
    stop_loss_atr: float = 0.0
    trailing_atr: float = 0.0
    take_profit_pct: float = 0.0
    max_holding_bars: int = 0
    daily_drawdown_limit: float = 0.0
    weekly_drawdown_limit: float = 0.0
    atr_period: int = 14
    max_leverage: float = 1.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"RiskRules.{field.name}={value!r}: must be a finite number >= 0")
        for name in ("stop_loss_pct", "daily_drawdown_limit", "weekly_drawdown_limit"):
            if getattr(self, name) >= 1:
                raise ValueError(f"RiskRules.{name}={getattr(self, name)!r}: must be below 1 (a fraction)")
        if self.max_leverage <= 0:
            raise ValueError(f"RiskRules.max_leverage={self.max_leverage!r}: must be > 0 (1 = no leverage)")
        if self.atr_period < 1:
            raise ValueError(f"RiskRules.atr_period={self.atr_period!r}: must be >= 1")

    @property
    def uses_atr(self) -> bool:
        return self.stop_loss_atr > 0 or self.trailing_atr > 0


@nb.njit(cache=True)
def _wilder_atr(high, low, close, period):
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n <= period:
        return out
    acc = 0.0
    for i in range(1, period + 1):
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        acc += tr
    atr = acc / period
    out[period] = atr
    for i in range(period + 1, n):
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        atr = (atr * (period - 1) + tr) / period
        out[i] = atr
    return out


def average_true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's ATR at each close (NaN for the first ``period`` bars), as TA-Lib computes it."""
    return _wilder_atr(
        np.ascontiguousarray(high, dtype=np.float64),
        np.ascontiguousarray(low, dtype=np.float64),
        np.ascontiguousarray(close, dtype=np.float64),
        int(period),
    )
