"""Parity with vectorbt: the same positions, fees and slippage give the same equity curve (1e-9 relative).

Conventions aligned explicitly:

- our target of bar t trades at the open of bar t + 1 (``execution="next_open"``);
  vectorbt gets the target shifted by one bar with ``price=open`` and
  ``val_price=open`` (so its target percent is of equity valued at that open, like ours);
- we trade only when the target changes, so vectorbt gets ``size=NaN`` (no order)
  on the other bars, ``size_type="targetpercent"``, ``direction="both"``;
- fees are a fraction of the filled value and slippage moves the fill price
  against the trader in both engines (``fees=fee_rate``, ``slippage=bps / 1e4``);
- both mark equity at the close; no funding and no stops (vectorbt has no
  funding, and its stop fills follow other rules);
- |target| <= 0.5 so vectorbt never clips an order for lack of cash, and at
  full size (targets in {-1, 0, 1}) ``lock_cash=True``: vectorbt then cuts
  every order so that position value plus fee and slippage fit the cash, the
  engine's margin rule at leverage 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

vbt = pytest.importorskip("vectorbt")  # imported once for the module

from pipeline.core.costs import CostModel  # noqa: E402
from pipeline.backtest.engine import prepare_inputs, run_backtest  # noqa: E402

H = 3_600_000


def _vectorbt_equity(o, c, target, costs, execution, lock_cash=False):
    n = c.size
    size = np.full(n, np.nan)
    last = 0.0
    for i in range(n):
        desired = (target[i - 1] if i > 0 else 0.0) if execution == "next_open" else target[i]
        if desired != last:
            size[i] = desired
            last = desired
    price = o if execution == "next_open" else c
    idx = pd.date_range("2024-01-01", periods=n, freq="h")
    pf = vbt.Portfolio.from_orders(
        close=pd.Series(c, idx), size=pd.Series(size, idx), size_type="targetpercent",
        price=pd.Series(price, idx), val_price=pd.Series(price, idx), fees=costs.fee_rate,
        slippage=costs.slippage, direction="both", init_cash=10_000.0, freq="1h", lock_cash=lock_cash,
    )
    return pf.value().to_numpy()


def _targets(n, seed):
    rng = np.random.default_rng(seed)
    levels = np.array([-0.5, -0.25, 0.0, 0.25, 0.5])
    raw = levels[rng.integers(0, 5, n)]
    hold = rng.uniform(size=n) < 0.8  # keep the previous target most of the time
    out = raw.copy()
    for i in range(1, n):
        if hold[i]:
            out[i] = out[i - 1]
    return out


def _random_market(n, seed):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[100.0, c[:-1]] * np.exp(rng.normal(0, 0.002, n))
    return np.arange(n) * H, o, np.maximum(o, c) * 1.002, np.minimum(o, c) * 0.998, c


def _assert_parity(ts, o, h, lo, c, target, costs, execution="next_open", lock_cash=False):
    """Our equity equals vectorbt's on the same orders to 1e-9 (relative); returns our result."""
    ours = run_backtest(prepare_inputs(ts, o, h, lo, c), target, costs, execution=execution)
    theirs = _vectorbt_equity(o, c, target, costs, execution, lock_cash=lock_cash)
    np.testing.assert_allclose(ours.equity, theirs, rtol=1e-9, atol=0)
    return ours


@pytest.mark.parametrize("execution", ["next_open", "close"])
def test_parity_on_a_random_market(execution):
    market = _random_market(3000, 11)
    ours = _assert_parity(*market, _targets(3000, 12), CostModel(taker_fee=0.00055, slippage_bps=3.0), execution)
    assert ours.n_trades > 100


def test_parity_on_real_btc_candles(shared_data):
    df = pl.read_csv(shared_data / "bybit_BTCUSDT_60.csv.gz").tail(5000)
    o, h, lo, c = (df[k].to_numpy().astype(float) for k in ("open", "high", "low", "close"))
    costs = CostModel(taker_fee=0.0002, order_type="taker", slippage_bps=1.5)
    _assert_parity(df["ts"].to_numpy(), o, h, lo, c, _targets(o.size, 13), costs)


@pytest.mark.parametrize("execution", ["next_open", "close"])
def test_parity_at_full_size_with_fees_and_slippage(execution):
    costs = CostModel(taker_fee=0.00055, slippage_bps=3.0, maintenance_margin_rate=0.005)
    target = np.sign(_targets(3000, 22))  # -1, 0, +1: every entry and flip is cut to fit the equity
    ours = _assert_parity(*_random_market(3000, 21), target, costs, execution, lock_cash=True)
    assert ours.n_trades > 100 and ours.n_liquidations == 0
