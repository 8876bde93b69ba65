"""The exchange's terms for one instrument (fees, slippage and impact, maintenance margin) and funding
payments aligned to bars."""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_MAINTENANCE_MARGIN_RATE = 0.005  # Bybit's first risk-limit tier of BTCUSDT (0.5 %)
# The settings that feed CostModel (same field names in pipeline.config.Settings, whose defaults are these).
COST_SETTINGS = ("taker_fee", "maker_fee", "slippage_bps")


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Fees and slippage, as fractions of traded value.

    ``fee_rate`` is charged on every fill (market orders pay the taker fee;
    ``order_type="maker"`` models resting limit orders). Slippage moves every
    fill against the trader by ``slippage_bps / 1e4 + impact_coef * |qty| / volume``
    where ``volume`` is the last closed bar's volume in base units.

    ``maintenance_margin_rate``: the maintenance margin as a fraction of the
    position's value; the engine liquidates a position when equity falls to
    it. Bybit's first risk-limit tier for BTCUSDT is 0.5 % (the default);
    other symbols and higher tiers have their own rate, so set it per symbol.
    Liquidations pay ``taker_fee`` whatever ``order_type`` says.
    """

    taker_fee: float = 0.00055
    maker_fee: float = 0.0002
    order_type: str = "taker"
    slippage_bps: float = 2.0
    impact_coef: float = 0.0
    maintenance_margin_rate: float = DEFAULT_MAINTENANCE_MARGIN_RATE

    def __post_init__(self) -> None:
        if self.order_type not in ("taker", "maker"):
            raise ValueError(f"order_type={self.order_type!r}: use 'taker' or 'maker'")
        for name in ("taker_fee", "maker_fee", "slippage_bps", "impact_coef", "maintenance_margin_rate"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CostModel.{name}={value!r}: must be a finite number >= 0")
        if self.maintenance_margin_rate >= 1:
            raise ValueError(f"CostModel.maintenance_margin_rate={self.maintenance_margin_rate!r}: must be below 1 "
                             f"(a fraction of the position's value, e.g. 0.005 for 0.5 %)")

    @property
    def fee_rate(self) -> float:
        return self.taker_fee if self.order_type == "taker" else self.maker_fee

    @property
    def slippage(self) -> float:
        return self.slippage_bps / 1e4

    @classmethod
    def from_settings(cls, settings, symbol: str | None = None, **overrides) -> "CostModel":
        """The costs the settings (a :class:`pipeline.config.Settings`) give; ``symbol`` picks its maintenance margin rate
        (``CONVTRADE_MAINTENANCE_MARGIN``), else the default rate applies."""
        values = dict(
            taker_fee=settings.taker_fee, maker_fee=settings.maker_fee, slippage_bps=settings.slippage_bps,
            maintenance_margin_rate=settings.maintenance_margin_rate(symbol),
        )
        values.update(overrides)
        return cls(**values)


def funding_per_bar(bar_ts_ms: np.ndarray, funding_ts_ms: np.ndarray, funding_rate: np.ndarray) -> np.ndarray:
    """Sum the funding rates onto the bars where they are paid.

    A settlement at time ``s`` is paid at the open of the first bar whose open
    time is ``>= s``, on the position held just before that open (so a
    settlement exactly at a bar's open hits the position carried into it, and
    one inside a bar hits the position held during that bar). Settlements
    before the first bar or after the last bar's open are dropped.
    """
    bar_ts_ms = np.asarray(bar_ts_ms, dtype=np.int64)
    funding_ts_ms = np.asarray(funding_ts_ms, dtype=np.int64)
    funding_rate = np.asarray(funding_rate, dtype=np.float64)
    if funding_ts_ms.shape != funding_rate.shape:
        raise ValueError(
            f"funding_ts has {funding_ts_ms.shape[0]} rows but funding_rate has {funding_rate.shape[0]}"
        )
    if not np.all(np.isfinite(funding_rate)):
        bad = int(np.flatnonzero(~np.isfinite(funding_rate))[0])
        raise ValueError(f"funding_rate is not finite at row {bad} (ts={int(funding_ts_ms[bad])} ms)")
    out = np.zeros(bar_ts_ms.shape[0], dtype=np.float64)
    if bar_ts_ms.shape[0] == 0 or funding_ts_ms.shape[0] == 0:
        return out
    idx = np.searchsorted(bar_ts_ms, funding_ts_ms, side="left")
    keep = (funding_ts_ms > bar_ts_ms[0]) & (idx < bar_ts_ms.shape[0])
    # a settlement exactly at the first open is paid on the (empty) position carried into it
    keep |= funding_ts_ms == bar_ts_ms[0]
    np.add.at(out, idx[keep], funding_rate[keep])
    return out
