"""The numeric core: one path-dependent loop over bars, arrays in, arrays out.

Perpetual-futures accounting on one symbol. The account holds ``cash`` and a
signed quantity ``qty``; equity is ``cash + qty * price`` and is marked to
market at every close. A target position is a signed fraction of equity. A
trade happens only when the (effective) target changes; the order quantity is
``target * equity / price - qty`` with equity valued at the fill's reference
price (the bar's open for ``execution="next_open"``, its close for
``execution="close"``).

Order of events inside bar ``i``:

1. day / week bookkeeping (drawdown limits are measured from the equity at the
   last close before the new day / week);
2. funding: ``funding[i]`` holds the rates settled in ``(open[i-1], open[i]]``
   (see :func:`pipeline.backtest.costs.funding_per_bar`); it is paid on the
   position held just before the open of bar ``i``, valued at that open:
   ``cash -= qty * open * rate`` (longs pay when the rate is positive);
3. at the open: a position that gapped through its stop (or take profit) is
   closed at the open; a position held ``max_holding_bars`` bars is closed;
4. ``execution="next_open"``: the target produced by the signal of bar ``i-1``
   is executed at the open of bar ``i``;
5. intrabar: stop loss, then take profit (the pessimistic order when both are
   inside the bar's range) at their trigger price;
6. ``execution="close"``: the target of bar ``i`` is executed at its close;
7. mark to market at the close; update the daily / weekly drawdown state.

Fills: ``price * (1 ± slippage)`` against the trader, where slippage is
``slippage_bps / 1e4 + impact_coef * |qty| / volume`` (volume of the last
closed bar, so no look-ahead). Fees are ``|qty| * fill_price * fee_rate``.
Stops fill at the stop price, or at the open when the bar gapped through it,
never at a better price, and pay slippage and fees like any order.

After a risk exit (stop, take profit, holding time, weekly stop) the position
stays flat until the signal's sign changes, so a stopped trade is not reopened
on the same signal.
"""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np

from pipeline.backtest.signals import targets_from_probabilities as _targets

# Parameter vector layout (float64), shared by the single run and the grid runner.
P_FEE = 0
P_SLIPPAGE = 1
P_IMPACT = 2
P_SL_PCT = 3
P_SL_ATR = 4
P_TRAIL_ATR = 5
P_TP_PCT = 6
P_MAX_HOLD = 7
P_DAILY_DD = 8
P_WEEKLY_DD = 9
P_EXEC_CLOSE = 10
P_INIT_EQUITY = 11
N_PARAMS = 12

# Exit reasons (trade records)
REASON_SIGNAL = 0
REASON_STOP_LOSS = 1
REASON_TAKE_PROFIT = 2
REASON_MAX_HOLD = 3
REASON_WEEKLY_STOP = 4
REASON_OPEN = 5  # still open at the last bar: marked to market, no exit fill
EXIT_REASONS = ("signal", "stop_loss", "take_profit", "max_hold", "weekly_stop", "open")

# Trade record columns (float64 matrix, one row per trade)
T_ENTRY_I = 0
T_EXIT_I = 1
T_SIDE = 2
T_ENTRY_PX = 3
T_EXIT_PX = 4
T_SIZE = 5
T_PNL = 6
T_FEES = 7
T_FUNDING = 8
T_REASON = 9
N_TRADE_COLS = 10

# Scalar state vector layout
S_CASH = 0
S_QTY = 1
S_ENTRY_I = 2
S_ENTRY_PX = 3  # volume-weighted entry fill price
S_ENTRY_QTY = 4  # total quantity added to the trade
S_EXIT_VAL = 5  # value of the reducing fills
S_EXIT_QTY = 6
S_TR_CF = 7  # trade cash flow from fills (gross pnl once flat)
S_TR_FEES = 8
S_TR_FUNDING = 9  # signed: negative when paid
S_TR_SIZE = 10
S_STOP_REF = 11  # reference price of the entry (unslipped) for stops
S_ATR_ENTRY = 12
S_PEAK = 13  # best price since entry (high for longs, low for shorts)
S_N_TRADES = 14
S_FEES_TOTAL = 15
S_FUNDING_TOTAL = 16  # paid (positive = cost)
S_TURNOVER = 17  # traded notional
S_OVERFLOW = 18
N_STATE = 19


@nb.njit(cache=True, inline="always", error_model="numpy")
def _sign(x):
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0


@nb.njit(cache=True, error_model="numpy")
def _fill(s, trades, record, i, delta, px, vol_ref, reason, atr_ref, params):
    """Trade ``delta`` units at reference price ``px``; update cash, qty and the trade records."""
    if delta == 0.0:
        return
    slip = params[P_SLIPPAGE]
    if params[P_IMPACT] > 0.0 and vol_ref > 0.0:
        slip += params[P_IMPACT] * abs(delta) / vol_ref
    if delta > 0.0:
        fpx = px * (1.0 + slip)
    else:
        fpx = px * (1.0 - slip)
    fee = abs(delta) * fpx * params[P_FEE]
    qty = s[S_QTY]
    equity_before = s[S_CASH] + qty * px
    new_qty = qty + delta
    s[S_CASH] -= delta * fpx + fee
    s[S_FEES_TOTAL] += fee
    s[S_TURNOVER] += abs(delta) * fpx

    if qty != 0.0 and _sign(new_qty) != _sign(qty):
        # closes the open trade (and maybe opens one on the other side)
        close_part = -qty
        fee_close = fee * abs(close_part) / abs(delta)
        s[S_TR_CF] -= close_part * fpx
        s[S_TR_FEES] += fee_close
        s[S_EXIT_VAL] += abs(close_part) * fpx
        s[S_EXIT_QTY] += abs(close_part)
        if record:
            k = int(s[S_N_TRADES])
            if k < trades.shape[0]:
                trades[k, T_ENTRY_I] = s[S_ENTRY_I]
                trades[k, T_EXIT_I] = i
                trades[k, T_SIDE] = _sign(qty)
                trades[k, T_ENTRY_PX] = s[S_ENTRY_PX]
                trades[k, T_EXIT_PX] = s[S_EXIT_VAL] / s[S_EXIT_QTY]
                trades[k, T_SIZE] = s[S_TR_SIZE]
                trades[k, T_PNL] = s[S_TR_CF] - s[S_TR_FEES] + s[S_TR_FUNDING]
                trades[k, T_FEES] = s[S_TR_FEES]
                trades[k, T_FUNDING] = s[S_TR_FUNDING]
                trades[k, T_REASON] = reason
            else:
                s[S_OVERFLOW] = 1.0
        s[S_N_TRADES] += 1.0
        open_part = new_qty
        fee_open = fee - fee_close
        if open_part != 0.0:
            _start_trade(s, i, open_part, fpx, px, fee_open, equity_before, atr_ref)
        else:
            s[S_ENTRY_I] = -1.0
    elif qty == 0.0:
        _start_trade(s, i, delta, fpx, px, fee, equity_before, atr_ref)
    else:
        s[S_TR_CF] -= delta * fpx
        s[S_TR_FEES] += fee
        if abs(new_qty) > abs(qty):
            added = abs(delta)
            s[S_ENTRY_PX] = (s[S_ENTRY_PX] * s[S_ENTRY_QTY] + added * fpx) / (s[S_ENTRY_QTY] + added)
            s[S_ENTRY_QTY] += added
        else:
            s[S_EXIT_VAL] += abs(delta) * fpx
            s[S_EXIT_QTY] += abs(delta)
    s[S_QTY] = new_qty


@nb.njit(cache=True, inline="always", error_model="numpy")
def _start_trade(s, i, q, fpx, px, fee, equity_before, atr_ref):
    s[S_ENTRY_I] = i
    s[S_ENTRY_PX] = fpx
    s[S_ENTRY_QTY] = abs(q)
    s[S_EXIT_VAL] = 0.0
    s[S_EXIT_QTY] = 0.0
    s[S_TR_CF] = -q * fpx
    s[S_TR_FEES] = fee
    s[S_TR_FUNDING] = 0.0
    s[S_TR_SIZE] = abs(q) * fpx / equity_before if equity_before > 0.0 else math.nan
    s[S_STOP_REF] = px
    s[S_ATR_ENTRY] = atr_ref
    s[S_PEAK] = px


@nb.njit(cache=True, inline="always", error_model="numpy")
def _stop_level(s, params, atr_now):
    """The stop price for the open position (NaN when no stop applies)."""
    side = _sign(s[S_QTY])
    ref = s[S_STOP_REF]
    stop = math.nan
    if params[P_SL_PCT] > 0.0:
        stop = ref * (1.0 - side * params[P_SL_PCT])
    if params[P_SL_ATR] > 0.0 and s[S_ATR_ENTRY] == s[S_ATR_ENTRY]:
        lvl = ref - side * params[P_SL_ATR] * s[S_ATR_ENTRY]
        if stop != stop or side * (lvl - stop) > 0.0:
            stop = lvl
    if params[P_TRAIL_ATR] > 0.0 and atr_now == atr_now:
        lvl = s[S_PEAK] - side * params[P_TRAIL_ATR] * atr_now
        if stop != stop or side * (lvl - stop) > 0.0:
            stop = lvl
    return stop


@nb.njit(cache=True, error_model="numpy")
def simulate(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params,
             equity, position, trades, record):
    """Run one backtest; fills ``equity`` / ``position`` (fraction at the close) and ``trades``.

    Returns the state vector (cash, qty, totals, number of trades, overflow flag).
    """
    n = close.shape[0]
    s = np.zeros(N_STATE)
    s[S_CASH] = params[P_INIT_EQUITY]
    s[S_ENTRY_I] = -1.0
    exec_close = params[P_EXEC_CLOSE] > 0.5
    max_hold = params[P_MAX_HOLD]
    tp = params[P_TP_PCT]
    daily_dd = params[P_DAILY_DD]
    weekly_dd = params[P_WEEKLY_DD]
    last_eq = params[P_INIT_EQUITY]
    cur_day = -(2**62)
    cur_week = -(2**62)
    day_start = last_eq
    week_start = last_eq
    scale = 1.0
    week_stopped = False
    locked = False
    locked_sign = 0.0
    prev_eff = 0.0
    for i in range(n):
        o = open_[i]
        if day_id[i] != cur_day:
            cur_day = day_id[i]
            day_start = last_eq
            scale = 1.0
        if week_id[i] != cur_week:
            cur_week = week_id[i]
            week_start = last_eq
            week_stopped = False
        atr_prev = atr[i - 1] if i > 0 else math.nan
        vol_prev = volume[i - 1] if i > 0 else 0.0
        # 2. funding on the position held into this open
        qty = s[S_QTY]
        if qty != 0.0 and funding[i] != 0.0:
            pay = qty * o * funding[i]
            s[S_CASH] -= pay
            s[S_TR_FUNDING] -= pay
            s[S_FUNDING_TOTAL] += pay
        # 3. gap through stop / take profit, holding time, weekly stop at the open
        if qty != 0.0:
            side = _sign(qty)
            stop = _stop_level(s, params, atr_prev)
            reason = -1
            if stop == stop and side * (o - stop) <= 0.0:
                reason = REASON_STOP_LOSS
            elif tp > 0.0 and side * (o - s[S_STOP_REF] * (1.0 + side * tp)) >= 0.0:
                reason = REASON_TAKE_PROFIT
            elif max_hold > 0.0 and i - s[S_ENTRY_I] >= max_hold:
                reason = REASON_MAX_HOLD
            elif week_stopped:
                reason = REASON_WEEKLY_STOP
            if reason >= 0:
                _fill(s, trades, record, i, -qty, o, vol_prev, reason, atr_prev, params)
                locked = True
                locked_sign = _sign(prev_eff)
                prev_eff = 0.0
        # 4. next-open execution of the previous bar's target
        if not exec_close:
            raw = target[i - 1] if i > 0 else 0.0
            if week_stopped:
                raw = 0.0
            if locked:
                if _sign(raw) == locked_sign and raw != 0.0:
                    raw = 0.0
                else:
                    locked = False
            eff = raw * scale
            if eff != prev_eff:
                prev_eff = eff
                eq_now = s[S_CASH] + s[S_QTY] * o
                delta = eff * eq_now / o - s[S_QTY]
                if eff == 0.0:
                    delta = -s[S_QTY]
                _fill(s, trades, record, i, delta, o, vol_prev, REASON_SIGNAL, atr_prev, params)
        # 5. intrabar stop, then take profit
        qty = s[S_QTY]
        held = qty != 0.0
        if held:
            side = _sign(qty)
            atr_now = atr_prev
            stop = _stop_level(s, params, atr_now)
            reason = -1
            px = 0.0
            if stop == stop and ((side > 0.0 and low[i] <= stop) or (side < 0.0 and high[i] >= stop)):
                reason = REASON_STOP_LOSS
                px = stop
                if side * (o - stop) < 0.0:  # never better than the open
                    px = o
            elif tp > 0.0:
                tp_px = s[S_STOP_REF] * (1.0 + side * tp)
                if (side > 0.0 and high[i] >= tp_px) or (side < 0.0 and low[i] <= tp_px):
                    reason = REASON_TAKE_PROFIT
                    px = tp_px
            if reason >= 0:
                _fill(s, trades, record, i, -qty, px, vol_prev, reason, atr_prev, params)
                locked = True
                locked_sign = _sign(prev_eff)
                prev_eff = 0.0
                held = False
            else:
                if side > 0.0:
                    if high[i] > s[S_PEAK]:
                        s[S_PEAK] = high[i]
                else:
                    if low[i] < s[S_PEAK]:
                        s[S_PEAK] = low[i]
        # 6. close execution of this bar's target
        c = close[i]
        if exec_close:
            raw = target[i]
            if week_stopped:
                raw = 0.0
            if locked:
                if _sign(raw) == locked_sign and raw != 0.0:
                    raw = 0.0
                else:
                    locked = False
            eff = raw * scale
            if eff != prev_eff:
                prev_eff = eff
                eq_now = s[S_CASH] + s[S_QTY] * c
                delta = eff * eq_now / c - s[S_QTY]
                if eff == 0.0:
                    delta = -s[S_QTY]
                _fill(s, trades, record, i, delta, c, volume[i], REASON_SIGNAL, atr[i], params)
        # 7. mark to market
        eq = s[S_CASH] + s[S_QTY] * c
        equity[i] = eq
        position[i] = s[S_QTY] * c / eq if eq != 0.0 else 0.0
        last_eq = eq
        if daily_dd > 0.0 and eq < day_start * (1.0 - daily_dd):
            scale = 0.5
        if weekly_dd > 0.0 and eq < week_start * (1.0 - weekly_dd):
            week_stopped = True
    # the trade still open at the end: marked at the last close, no exit fill
    if s[S_QTY] != 0.0:
        k = int(s[S_N_TRADES])
        if not record:
            pass
        elif k < trades.shape[0]:
            qty = s[S_QTY]
            c = close[n - 1]
            trades[k, T_ENTRY_I] = s[S_ENTRY_I]
            trades[k, T_EXIT_I] = n - 1
            trades[k, T_SIDE] = _sign(qty)
            trades[k, T_ENTRY_PX] = s[S_ENTRY_PX]
            trades[k, T_EXIT_PX] = c
            trades[k, T_SIZE] = s[S_TR_SIZE]
            trades[k, T_PNL] = s[S_TR_CF] + qty * c - s[S_TR_FEES] + s[S_TR_FUNDING]
            trades[k, T_FEES] = s[S_TR_FEES]
            trades[k, T_FUNDING] = s[S_TR_FUNDING]
            trades[k, T_REASON] = REASON_OPEN
        else:
            s[S_OVERFLOW] = 1.0
        s[S_N_TRADES] += 1.0
    return s


@dataclasses.dataclass(frozen=True)
class EngineInputs:
    """Validated, contiguous float64 / int64 arrays for :func:`simulate`."""

    ts_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    atr: np.ndarray
    funding: np.ndarray
    day_id: np.ndarray
    week_id: np.ndarray


EXECUTIONS = ("next_open", "close")
DAY_MS = 86_400_000


def timestamps_ms(ts) -> np.ndarray:
    """int64 milliseconds since the epoch from int64 ms or datetime64 values."""
    arr = np.asarray(ts)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ms]").astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    raise ValueError(f"ts has dtype {arr.dtype}: pass int64 milliseconds or datetime64 values")


def _as_array(name: str, values, n: int | None) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, has shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but ts / open have {n}: the arrays must be aligned bar by bar")
    return arr


def _first_bad(name: str, arr: np.ndarray, bad: np.ndarray, ts_ms: np.ndarray, what: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        stamp = np.datetime64(int(ts_ms[i]), "ms") if i < ts_ms.shape[0] else "?"
        raise ValueError(f"{name}[{i}]={arr[i].item()!r} at ts={stamp} {what} ({int(bad.sum())} bad value(s) in all)")


def prepare_inputs(ts, open, high, low, close, volume=None, funding=None, atr_period: int = 14,
                   need_atr: bool = True) -> EngineInputs:
    """Validate and convert the candle arrays once (reuse them across many runs)."""
    from pipeline.backtest.risk import average_true_range

    ts_ms = timestamps_ms(ts)
    n = ts_ms.shape[0]
    if ts_ms.ndim != 1:
        raise ValueError(f"ts must be one-dimensional, has shape {ts_ms.shape}")
    if n == 0:
        raise ValueError("empty series: ts has no bars, nothing to backtest")
    arrays = {name: _as_array(name, v, n) for name, v in (("open", open), ("high", high), ("low", low), ("close", close))}
    for name, arr in arrays.items():
        _first_bad(name, arr, ~np.isfinite(arr) | (arr <= 0), ts_ms, "is not a positive finite price")
    if n > 1:
        steps = np.diff(ts_ms)
        _first_bad("ts", ts_ms[1:], steps <= 0, ts_ms[1:], "is not after the previous ts (sort and deduplicate the bars)")
    o, h, lo, c = arrays["open"], arrays["high"], arrays["low"], arrays["close"]
    _first_bad("high", h, h < np.maximum(o, c) * (1 - 1e-12), ts_ms, "is below max(open, close)")
    _first_bad("low", lo, lo > np.minimum(o, c) * (1 + 1e-12), ts_ms, "is above min(open, close)")
    vol = np.zeros(n) if volume is None else _as_array("volume", volume, n)
    _first_bad("volume", vol, ~np.isfinite(vol) | (vol < 0), ts_ms, "is not a finite volume >= 0")
    fund = np.zeros(n) if funding is None else _as_array("funding", funding, n)
    _first_bad("funding", fund, ~np.isfinite(fund), ts_ms, "is not a finite funding rate")
    atr = average_true_range(h, lo, c, atr_period) if need_atr else np.full(n, np.nan)
    day_id = ts_ms // DAY_MS
    week_id = (day_id + 3) // 7  # 1970-01-01 was a Thursday: weeks start on Monday
    return EngineInputs(ts_ms, o, h, lo, c, vol, atr, fund, day_id, week_id)


def engine_params(costs, risk, execution: str, initial_equity: float) -> np.ndarray:
    if execution not in EXECUTIONS:
        raise ValueError(f"execution={execution!r}: use one of {', '.join(EXECUTIONS)}")
    if not (np.isfinite(initial_equity) and initial_equity > 0):
        raise ValueError(f"initial_equity={initial_equity!r}: must be a positive number")
    p = np.zeros(N_PARAMS)
    p[P_FEE] = costs.fee_rate
    p[P_SLIPPAGE] = costs.slippage
    p[P_IMPACT] = costs.impact_coef
    p[P_SL_PCT] = risk.stop_loss_pct
    p[P_SL_ATR] = risk.stop_loss_atr
    p[P_TRAIL_ATR] = risk.trailing_atr
    p[P_TP_PCT] = risk.take_profit_pct
    p[P_MAX_HOLD] = risk.max_holding_bars
    p[P_DAILY_DD] = risk.daily_drawdown_limit
    p[P_WEEKLY_DD] = risk.weekly_drawdown_limit
    p[P_EXEC_CLOSE] = 1.0 if execution == "close" else 0.0
    p[P_INIT_EQUITY] = initial_equity
    return p


@dataclasses.dataclass(frozen=True)
class BacktestResult:
    """Per-bar equity (at the close) and position (signed fraction of equity), trade records, totals."""

    ts_ms: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    trades: np.ndarray  # (n_trades, N_TRADE_COLS) float64, columns T_*
    initial_equity: float
    fees_paid: float
    funding_paid: float  # positive = paid, negative = received
    turnover: float  # traded notional, quote currency
    close: np.ndarray

    @property
    def n_trades(self) -> int:
        return int(self.trades.shape[0])

    def trades_table(self) -> dict[str, np.ndarray]:
        """Trade records as named columns (timestamps in ms, exit reasons as text)."""
        t = self.trades
        entry_i = t[:, T_ENTRY_I].astype(np.int64)
        exit_i = t[:, T_EXIT_I].astype(np.int64)
        return {
            "trade_no": np.arange(1, t.shape[0] + 1, dtype=np.int64),
            "side": t[:, T_SIDE].astype(np.int64),
            "entry_i": entry_i,
            "exit_i": exit_i,
            "entry_ts_ms": self.ts_ms[entry_i],
            "exit_ts_ms": self.ts_ms[exit_i],
            "entry_price": t[:, T_ENTRY_PX],
            "exit_price": t[:, T_EXIT_PX],
            "size": t[:, T_SIZE],
            "pnl": t[:, T_PNL],
            "fees": t[:, T_FEES],
            "funding": t[:, T_FUNDING],
            "exit_reason": np.array([EXIT_REASONS[int(r)] for r in t[:, T_REASON]], dtype=object),
            "holding_bars": exit_i - entry_i,
        }


def run_backtest(inputs: EngineInputs, target, costs=None, risk=None, execution: str = "next_open",
                 initial_equity: float = 10_000.0) -> BacktestResult:
    """One backtest of ``target`` (signed fraction of equity per bar) on prepared candle arrays.

    With ``execution="next_open"`` the target of bar ``t`` (from a signal known
    when bar ``t`` closes) is traded at the open of bar ``t + 1``; with
    ``"close"`` at the close of bar ``t``.
    """
    from pipeline.backtest.costs import CostModel
    from pipeline.backtest.risk import RiskRules

    costs = costs or CostModel()
    risk = risk or RiskRules()
    n = inputs.close.shape[0]
    tgt = _as_array("target", target, n)
    _first_bad("target", tgt, ~np.isfinite(tgt), inputs.ts_ms, "is not a finite target position")
    params = engine_params(costs, risk, execution, initial_equity)
    equity = np.empty(n)
    position = np.empty(n)
    capacity = max(1024, n // 8)
    while True:
        trades = np.empty((capacity, N_TRADE_COLS))
        s = simulate(inputs.open, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.atr,
                     inputs.funding, inputs.day_id, inputs.week_id, tgt, params, equity, position, trades, True)
        if s[S_OVERFLOW] == 0.0:
            break
        capacity = int(s[S_N_TRADES]) + 1
    return BacktestResult(
        ts_ms=inputs.ts_ms, equity=equity, position=position, trades=trades[: int(s[S_N_TRADES])].copy(),
        initial_equity=float(initial_equity), fees_paid=float(s[S_FEES_TOTAL]),
        funding_paid=float(s[S_FUNDING_TOTAL]), turnover=float(s[S_TURNOVER]), close=inputs.close,
    )


# ---- grid runner -------------------------------------------------------------------------------

# grid configuration columns
G_THRESHOLD = 0
G_SIZING = 1
G_FRACTION = 2
G_SL_PCT = 3
G_SL_ATR = 4
G_TRAIL_ATR = 5
G_TP_PCT = 6
G_MAX_HOLD = 7
N_GRID_COLS = 8

# grid summary columns
GRID_SUMMARY = ("total_return", "sharpe", "max_drawdown", "n_trades", "fees_paid", "funding_paid", "turnover", "exposure")


@nb.njit(cache=True, inline="always", error_model="numpy")
def _lean_stop(side, ref, atr_entry, peak, sl_pct, sl_atr, trail_atr, atr_now):
    """:func:`_stop_level` on scalar state (same arithmetic)."""
    stop = math.nan
    if sl_pct > 0.0:
        stop = ref * (1.0 - side * sl_pct)
    if sl_atr > 0.0 and atr_entry == atr_entry:
        lvl = ref - side * sl_atr * atr_entry
        if stop != stop or side * (lvl - stop) > 0.0:
            stop = lvl
    if trail_atr > 0.0 and atr_now == atr_now:
        lvl = peak - side * trail_atr * atr_now
        if stop != stop or side * (lvl - stop) > 0.0:
            stop = lvl
    return stop


@nb.njit(cache=True, error_model="numpy")
def _summary_run(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params, bars_per_year,
                 out):
    """One grid configuration: :func:`simulate` without trade records or per-bar outputs.

    The same events in the same order with the same floating-point operations
    (so the same equity path, bit for bit), the state held in local variables,
    and the summary (columns ``GRID_SUMMARY``) accumulated on the fly and
    written to ``out``. Divisions whose result cannot matter are skipped: the
    drawdown ratio when the equity is clearly above the worst drawdown so far,
    the position fraction when it is clearly nonzero.
    """
    n = close.shape[0]
    fee_rate = params[P_FEE]
    slippage = params[P_SLIPPAGE]
    impact = params[P_IMPACT]
    sl_pct = params[P_SL_PCT]
    sl_atr = params[P_SL_ATR]
    trail_atr = params[P_TRAIL_ATR]
    tp = params[P_TP_PCT]
    max_hold = params[P_MAX_HOLD]
    daily_dd = params[P_DAILY_DD]
    weekly_dd = params[P_WEEKLY_DD]
    exec_close = params[P_EXEC_CLOSE] > 0.5
    init = params[P_INIT_EQUITY]
    has_stop = sl_pct > 0.0 or sl_atr > 0.0 or trail_atr > 0.0
    cash = init
    qty = 0.0
    entry_i = -1.0
    stop_ref = 0.0
    atr_entry = 0.0
    peak_px = 0.0
    n_trades = 0.0
    fees_total = 0.0
    funding_total = 0.0
    turnover = 0.0
    last_eq = init
    cur_day = -(2**62)
    cur_week = -(2**62)
    day_start = last_eq
    week_start = last_eq
    scale = 1.0
    week_stopped = False
    locked = False
    locked_sign = 0.0
    prev_eff = 0.0
    # summary accumulators (as the grid computed them from the equity curve)
    prev = init
    peak = init
    mdd = 0.0
    acc = 0.0
    acc2 = 0.0
    exposed = 0
    for i in range(n):
        o = open_[i]
        if day_id[i] != cur_day:
            cur_day = day_id[i]
            day_start = last_eq
            scale = 1.0
        if week_id[i] != cur_week:
            cur_week = week_id[i]
            week_start = last_eq
            week_stopped = False
        atr_prev = atr[i - 1] if i > 0 else math.nan
        vol_prev = volume[i - 1] if i > 0 else 0.0
        # 2. funding on the position held into this open
        fr = funding[i]
        if qty != 0.0 and fr != 0.0:
            pay = qty * o * fr
            cash -= pay
            funding_total += pay
        # 3. gap through stop / take profit, holding time, weekly stop at the open
        if qty != 0.0:
            side = 1.0 if qty > 0.0 else -1.0
            stop = math.nan
            if has_stop:
                stop = _lean_stop(side, stop_ref, atr_entry, peak_px, sl_pct, sl_atr, trail_atr, atr_prev)
            exit_now = False
            if stop == stop and side * (o - stop) <= 0.0:
                exit_now = True
            elif tp > 0.0 and side * (o - stop_ref * (1.0 + side * tp)) >= 0.0:
                exit_now = True
            elif max_hold > 0.0 and i - entry_i >= max_hold:
                exit_now = True
            elif week_stopped:
                exit_now = True
            if exit_now:
                delta = -qty
                slip = slippage
                if impact > 0.0 and vol_prev > 0.0:
                    slip += impact * abs(delta) / vol_prev
                fpx = o * (1.0 + slip) if delta > 0.0 else o * (1.0 - slip)
                fee = abs(delta) * fpx * fee_rate
                cash -= delta * fpx + fee
                fees_total += fee
                turnover += abs(delta) * fpx
                n_trades += 1.0
                entry_i = -1.0
                qty = 0.0
                locked = True
                locked_sign = 1.0 if prev_eff > 0.0 else (-1.0 if prev_eff < 0.0 else 0.0)
                prev_eff = 0.0
        # 4. next-open execution of the previous bar's target
        if not exec_close:
            raw = target[i - 1] if i > 0 else 0.0
            if week_stopped:
                raw = 0.0
            if locked:
                raw_sign = 1.0 if raw > 0.0 else (-1.0 if raw < 0.0 else 0.0)
                if raw_sign == locked_sign and raw != 0.0:
                    raw = 0.0
                else:
                    locked = False
            eff = raw * scale
            if eff != prev_eff:
                prev_eff = eff
                eq_now = cash + qty * o
                delta = eff * eq_now / o - qty
                if eff == 0.0:
                    delta = -qty
                if delta != 0.0:
                    slip = slippage
                    if impact > 0.0 and vol_prev > 0.0:
                        slip += impact * abs(delta) / vol_prev
                    fpx = o * (1.0 + slip) if delta > 0.0 else o * (1.0 - slip)
                    fee = abs(delta) * fpx * fee_rate
                    new_qty = qty + delta
                    cash -= delta * fpx + fee
                    fees_total += fee
                    turnover += abs(delta) * fpx
                    new_side = 1.0 if new_qty > 0.0 else (-1.0 if new_qty < 0.0 else 0.0)
                    old_side = 1.0 if qty > 0.0 else (-1.0 if qty < 0.0 else 0.0)
                    if qty != 0.0 and new_side != old_side:
                        n_trades += 1.0
                        if new_qty != 0.0:
                            entry_i = i
                            stop_ref = o
                            atr_entry = atr_prev
                            peak_px = o
                        else:
                            entry_i = -1.0
                    elif qty == 0.0:
                        entry_i = i
                        stop_ref = o
                        atr_entry = atr_prev
                        peak_px = o
                    qty = new_qty
        # 5. intrabar stop, then take profit
        if qty != 0.0:
            side = 1.0 if qty > 0.0 else -1.0
            stop = math.nan
            if has_stop:
                stop = _lean_stop(side, stop_ref, atr_entry, peak_px, sl_pct, sl_atr, trail_atr, atr_prev)
            exit_now = False
            px = 0.0
            if stop == stop and ((side > 0.0 and low[i] <= stop) or (side < 0.0 and high[i] >= stop)):
                exit_now = True
                px = stop
                if side * (o - stop) < 0.0:  # never better than the open
                    px = o
            elif tp > 0.0:
                tp_px = stop_ref * (1.0 + side * tp)
                if (side > 0.0 and high[i] >= tp_px) or (side < 0.0 and low[i] <= tp_px):
                    exit_now = True
                    px = tp_px
            if exit_now:
                delta = -qty
                slip = slippage
                if impact > 0.0 and vol_prev > 0.0:
                    slip += impact * abs(delta) / vol_prev
                fpx = px * (1.0 + slip) if delta > 0.0 else px * (1.0 - slip)
                fee = abs(delta) * fpx * fee_rate
                cash -= delta * fpx + fee
                fees_total += fee
                turnover += abs(delta) * fpx
                n_trades += 1.0
                entry_i = -1.0
                qty = 0.0
                locked = True
                locked_sign = 1.0 if prev_eff > 0.0 else (-1.0 if prev_eff < 0.0 else 0.0)
                prev_eff = 0.0
            else:
                if side > 0.0:
                    if high[i] > peak_px:
                        peak_px = high[i]
                else:
                    if low[i] < peak_px:
                        peak_px = low[i]
        # 6. close execution of this bar's target
        c = close[i]
        if exec_close:
            raw = target[i]
            if week_stopped:
                raw = 0.0
            if locked:
                raw_sign = 1.0 if raw > 0.0 else (-1.0 if raw < 0.0 else 0.0)
                if raw_sign == locked_sign and raw != 0.0:
                    raw = 0.0
                else:
                    locked = False
            eff = raw * scale
            if eff != prev_eff:
                prev_eff = eff
                eq_now = cash + qty * c
                delta = eff * eq_now / c - qty
                if eff == 0.0:
                    delta = -qty
                if delta != 0.0:
                    vol_ref = volume[i]
                    slip = slippage
                    if impact > 0.0 and vol_ref > 0.0:
                        slip += impact * abs(delta) / vol_ref
                    fpx = c * (1.0 + slip) if delta > 0.0 else c * (1.0 - slip)
                    fee = abs(delta) * fpx * fee_rate
                    new_qty = qty + delta
                    cash -= delta * fpx + fee
                    fees_total += fee
                    turnover += abs(delta) * fpx
                    new_side = 1.0 if new_qty > 0.0 else (-1.0 if new_qty < 0.0 else 0.0)
                    old_side = 1.0 if qty > 0.0 else (-1.0 if qty < 0.0 else 0.0)
                    if qty != 0.0 and new_side != old_side:
                        n_trades += 1.0
                        if new_qty != 0.0:
                            entry_i = i
                            stop_ref = c
                            atr_entry = atr[i]
                            peak_px = c
                        else:
                            entry_i = -1.0
                    elif qty == 0.0:
                        entry_i = i
                        stop_ref = c
                        atr_entry = atr[i]
                        peak_px = c
                    qty = new_qty
        # 7. mark to market, summary accumulators
        eq = cash + qty * c
        notional = qty * c
        if abs(notional) > 1e-200 and abs(eq) < 1e100 and eq != 0.0:
            exposed += 1  # |notional / eq| > 1e-300: nonzero
        elif eq != 0.0 and notional / eq != 0.0:
            exposed += 1
        last_eq = eq
        if daily_dd > 0.0 and eq < day_start * (1.0 - daily_dd):
            scale = 0.5
        if weekly_dd > 0.0 and eq < week_start * (1.0 - weekly_dd):
            week_stopped = True
        r = eq / prev - 1.0
        acc += r
        acc2 += r * r
        prev = eq
        if eq > peak:
            peak = eq
        # dd = eq / peak - 1 can only beat mdd when eq is near or below peak * (1 + mdd)
        if not (eq > peak * (1.0 + mdd) + 1e-9 * peak * (1.0 + abs(1.0 + mdd))):
            dd = eq / peak - 1.0
            if dd < mdd:
                mdd = dd
    if qty != 0.0:
        n_trades += 1.0
    mean = acc / n
    var = (acc2 - n * mean * mean) / (n - 1) if n > 1 else 0.0
    out[0] = prev / init - 1.0
    out[1] = mean / math.sqrt(var) * math.sqrt(bars_per_year) if var > 0.0 else math.nan
    out[2] = mdd
    out[3] = n_trades
    out[4] = fees_total
    out[5] = funding_total
    out[6] = turnover
    out[7] = exposed / n


@nb.njit(cache=True, parallel=True, error_model="numpy")
def _signal_targets(p_down, p_up, conf, signals, min_conf, kelly_payoff, kelly_mult, kelly_cap, targets):
    """``targets[u]``: the target positions of signal ``u`` (threshold, sizing code, fraction)."""
    for u in nb.prange(signals.shape[0]):
        _targets(p_down, p_up, conf, signals[u, 0], int(signals[u, 1]), signals[u, 2], min_conf, kelly_payoff,
                 kelly_mult, kelly_cap, True, targets[u])


@nb.njit(cache=True, parallel=True, error_model="numpy")
def _grid(open_, high, low, close, volume, atr, funding, day_id, week_id, targets, signal_of, order, configs,
          base_params, bars_per_year, out):
    """Configurations ``order[m]`` (grouped by signal, so a thread reuses a target row from cache)."""
    for m in nb.prange(order.shape[0]):
        k = order[m]
        params = base_params.copy()
        params[P_SL_PCT] = configs[k, G_SL_PCT]
        params[P_SL_ATR] = configs[k, G_SL_ATR]
        params[P_TRAIL_ATR] = configs[k, G_TRAIL_ATR]
        params[P_TP_PCT] = configs[k, G_TP_PCT]
        params[P_MAX_HOLD] = configs[k, G_MAX_HOLD]
        _summary_run(open_, high, low, close, volume, atr, funding, day_id, week_id, targets[signal_of[k]], params,
                     bars_per_year, out[k])


@nb.njit(cache=True, error_model="numpy")
def grid_reference(open_, high, low, close, volume, atr, funding, day_id, week_id, p_down, p_up, conf,
                    configs, base_params, min_conf, kelly_payoff, kelly_mult, kelly_cap, bars_per_year, out):
    """The grid through :func:`simulate` and full equity curves, one configuration after the other.

    The straightforward (slow) path the grid runner used before :func:`_summary_run`;
    kept so tests can check that the fast path gives the same numbers bit for bit.
    """
    n = close.shape[0]
    n_cfg = configs.shape[0]
    dummy = np.empty((1, N_TRADE_COLS))
    for k in range(n_cfg):
        params = base_params.copy()
        params[P_SL_PCT] = configs[k, G_SL_PCT]
        params[P_SL_ATR] = configs[k, G_SL_ATR]
        params[P_TRAIL_ATR] = configs[k, G_TRAIL_ATR]
        params[P_TP_PCT] = configs[k, G_TP_PCT]
        params[P_MAX_HOLD] = configs[k, G_MAX_HOLD]
        target = np.empty(n)
        _targets(p_down, p_up, conf, configs[k, G_THRESHOLD], int(configs[k, G_SIZING]), configs[k, G_FRACTION],
                 min_conf, kelly_payoff, kelly_mult, kelly_cap, True, target)
        equity = np.empty(n)
        position = np.empty(n)
        s = simulate(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params,
                     equity, position, dummy, False)
        init = params[P_INIT_EQUITY]
        prev = init
        peak = init
        mdd = 0.0
        acc = 0.0
        acc2 = 0.0
        exposed = 0
        for i in range(n):
            r = equity[i] / prev - 1.0
            acc += r
            acc2 += r * r
            prev = equity[i]
            if equity[i] > peak:
                peak = equity[i]
            dd = equity[i] / peak - 1.0
            if dd < mdd:
                mdd = dd
            if position[i] != 0.0:
                exposed += 1
        mean = acc / n
        var = (acc2 - n * mean * mean) / (n - 1) if n > 1 else 0.0
        out[k, 0] = equity[n - 1] / init - 1.0
        out[k, 1] = mean / math.sqrt(var) * math.sqrt(bars_per_year) if var > 0.0 else math.nan
        out[k, 2] = mdd
        out[k, 3] = s[S_N_TRADES]
        out[k, 4] = s[S_FEES_TOTAL]
        out[k, 5] = s[S_FUNDING_TOTAL]
        out[k, 6] = s[S_TURNOVER]
        out[k, 7] = exposed / n


def run_grid(inputs: EngineInputs, p_down, p_up, configs: np.ndarray, bars_per_year: float, costs=None,
             confidence=None, min_confidence: float = 0.0, kelly_payoff: float = 1.0, half_kelly: bool = True,
             kelly_cap: float = 0.25, daily_drawdown_limit: float = 0.0, weekly_drawdown_limit: float = 0.0,
             execution: str = "next_open", initial_equity: float = 10_000.0) -> np.ndarray:
    """Summaries (columns ``GRID_SUMMARY``) of many (threshold × sizing × stop) configurations.

    ``configs`` has one row per configuration with columns ``G_*``: threshold,
    sizing code (0 fixed, 1 confidence, 2 kelly), fraction, stop loss %, stop
    loss ATR k, trailing ATR k, take profit %, max holding bars. The candle
    arrays are shared by all runs; configurations run in parallel threads.
    """
    from pipeline.backtest.costs import CostModel
    from pipeline.backtest.risk import RiskRules
    from pipeline.backtest.signals import _check_probability

    costs = costs or CostModel()
    n = inputs.close.shape[0]
    p_up_arr = _check_probability("p_up", p_up, n)
    p_down_arr = _check_probability("p_down", p_down, n)
    conf = np.maximum(p_up_arr, p_down_arr) if confidence is None else _check_probability("confidence", confidence, n)
    configs = np.ascontiguousarray(configs, dtype=np.float64)
    if configs.ndim != 2 or configs.shape[1] != N_GRID_COLS:
        raise ValueError(f"configs has shape {configs.shape}; expected (n_configs, {N_GRID_COLS})")
    if not np.all(np.isfinite(configs)):
        raise ValueError("configs holds NaN or infinite values")
    base = engine_params(costs, RiskRules(daily_drawdown_limit=daily_drawdown_limit,
                                          weekly_drawdown_limit=weekly_drawdown_limit), execution, initial_equity)
    if not np.all(np.isin(configs[:, G_SIZING], (0.0, 1.0, 2.0))):
        bad = int(np.flatnonzero(~np.isin(configs[:, G_SIZING], (0.0, 1.0, 2.0)))[0])
        raise ValueError(f"configs[{bad}, {G_SIZING}]={float(configs[bad, G_SIZING])!r}: the sizing code must be "
                         f"0 (fixed), 1 (confidence) or 2 (kelly)")
    kelly_mult = 0.5 if half_kelly else 1.0
    # the distinct signals (threshold, sizing, fraction): their target arrays are computed once
    signals, signal_of = np.unique(configs[:, :G_SL_PCT], axis=0, return_inverse=True)
    signal_of = np.ascontiguousarray(signal_of.reshape(-1), dtype=np.int64)
    targets = np.empty((signals.shape[0], n))
    _signal_targets(p_down_arr, p_up_arr, conf, np.ascontiguousarray(signals), float(min_confidence),
                    float(kelly_payoff), kelly_mult, float(kelly_cap), targets)
    order = np.argsort(signal_of, kind="stable").astype(np.int64)
    out = np.empty((configs.shape[0], len(GRID_SUMMARY)))
    _grid(inputs.open, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.atr, inputs.funding,
          inputs.day_id, inputs.week_id, targets, signal_of, order, configs, base, float(bars_per_year), out)
    return out
