"""The numeric core: one path-dependent loop over bars, arrays in, arrays out.

Perpetual-futures accounting on one symbol, as the exchange keeps it. The
account holds ``cash`` and a signed quantity ``qty``; equity is ``cash + qty *
price`` and is marked to market at every close. A target position is a signed
fraction of equity. A trade happens only when the (effective) target changes;
the order quantity is ``target * equity / price - qty`` with equity valued at
the fill's reference price (the bar's open for ``execution="next_open"``, its
close for ``execution="close"``).

Every fill goes through one order-execution kernel, :func:`execute_order`
(like vectorbt's ``process_order_nb``), and every run through one bar loop,
:func:`_bar_loop`: the single run (:func:`simulate`, with per-bar curves and
trade records) and each grid configuration (:func:`_summary_run`, summary
only) are the same compiled loop, so they agree bit for bit.

Margin: an order that opens or adds exposure is cut so that the equity after
it covers ``|position| / leverage`` (``RiskRules.max_leverage``, 1 unless
configured), fees and slippage included. A position is liquidated when equity
falls to its maintenance margin ``maintenance_margin_rate * |qty| * price``
(``CostModel.maintenance_margin_rate``): checked at the open after funding,
intrabar at the bar's adverse extreme (low for a long, high for a short) and
after a fill at the close; filled at the liquidation price (the open when the
bar opened past it) with the taker fee and no slippage. After a liquidation
the account stays flat. Equity never goes below zero.

Order of events inside bar ``i``:

1. day / week bookkeeping (drawdown limits are measured from the equity at the
   last close before the new day / week);
2. funding: ``funding[i]`` holds the rates settled in ``(open[i-1], open[i]]``
   (see :func:`pipeline.core.costs.funding_per_bar`); it is paid on the
   position held just before the open of bar ``i``, valued at that open:
   ``cash -= qty * open * rate`` (longs pay when the rate is positive);
3. at the open: liquidation if equity is at or below the maintenance margin;
   else a position that gapped through its stop (or take profit) is closed at
   the open; a position held ``max_holding_bars`` bars is closed;
4. ``execution="next_open"``: the target produced by the signal of bar ``i-1``
   is executed at the open of bar ``i``;
5. intrabar: liquidation or stop loss, whichever the adverse move reaches
   first, then take profit (the pessimistic order when several are inside the
   bar's range) at their trigger price;
6. ``execution="close"``: the target of bar ``i`` is executed at its close (and
   liquidated there if that leaves equity at or below the maintenance margin);
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

from pipeline.core.positions import targets_from_probabilities as _targets
from pipeline.core.timegrid import DAY_MS

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
P_TAKER_FEE = 12  # liquidations pay the taker fee
P_MMR = 13  # maintenance margin rate
P_LEVERAGE = 14  # the most |position| / equity an order may open
N_PARAMS = 15

# Exit reasons (trade records)
REASON_SIGNAL = 0
REASON_STOP_LOSS = 1
REASON_TAKE_PROFIT = 2
REASON_MAX_HOLD = 3
REASON_WEEKLY_STOP = 4
REASON_OPEN = 5  # still open at the last bar: marked to market, no exit fill
REASON_LIQUIDATION = 6
EXIT_REASONS = ("signal", "stop_loss", "take_profit", "max_hold", "weekly_stop", "open", "liquidation")

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

# The open trade's bookkeeping (single run only)
TR_ENTRY_I = 0
TR_ENTRY_PX = 1  # volume-weighted entry fill price
TR_ENTRY_QTY = 2  # total quantity added to the trade
TR_EXIT_VAL = 3  # value of the reducing fills
TR_EXIT_QTY = 4
TR_CF = 5  # trade cash flow from fills (gross pnl once flat)
TR_FEES = 6
TR_FUNDING = 7  # signed: negative when paid
TR_SIZE = 8
TR_N = 9  # trade records written
TR_OVERFLOW = 10
N_TR = 11

# Totals vector returned by a run
S_CASH = 0
S_QTY = 1
S_N_TRADES = 2
S_FEES_TOTAL = 3
S_FUNDING_TOTAL = 4  # paid (positive = cost)
S_TURNOVER = 5  # traded notional
S_OVERFLOW = 6
S_N_LIQUIDATIONS = 7
S_SHORTFALL = 8  # losses past zero equity that the exchange took (gaps past the liquidation price)
N_STATE = 9

# grid summary columns (also BacktestResult.summary)
GRID_SUMMARY = ("total_return", "sharpe", "max_drawdown", "n_trades", "fees_paid", "funding_paid", "turnover",
                "exposure", "n_liquidations")


@nb.njit(cache=True, inline="always", error_model="numpy")
def _sign(x):
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0


@nb.njit(cache=True, inline="always", error_model="numpy")
def execute_order(cash, qty, delta, px, vol_ref, fee_rate, slippage, impact, leverage):
    """The one order-execution kernel: trade ``delta`` units at reference price ``px``.

    Every fill goes through here (signal orders, stops, take profit, holding
    time, weekly stop, liquidation), in the single run and in the grid. The
    fill price is ``px * (1 ± slip)`` against the trader, ``slip = slippage +
    impact * |delta| / vol_ref``; the fee is ``|delta| * fill * fee_rate``.

    Margin: an order that opens or adds exposure is cut so that the equity
    after it, valued at the fill price, still covers the position's initial
    margin ``|qty| * fill / leverage`` (at leverage 1: position value plus fee
    and slippage fit the equity, as vectorbt's ``targetpercent`` orders with
    ``lock_cash=True``). Orders that reduce exposure are never cut. An order
    that leaves the account flat with negative cash (a gap past the
    liquidation price) pays the fee only as far as the cash goes, and the
    rest is the exchange's (``shortfall``): balances never go negative.

    Returns ``(cash, qty, delta, fill_price, fee, shortfall)`` after the fill.
    """
    if delta == 0.0:
        return cash, qty, 0.0, px, 0.0, 0.0
    side = 1.0 if delta > 0.0 else -1.0
    slip = slippage
    if impact > 0.0 and vol_ref > 0.0:
        slip += impact * abs(delta) / vol_ref
    fpx = px * (1.0 + side * slip)
    new_qty = qty + delta
    if new_qty != 0.0 and (qty == 0.0 or (new_qty > 0.0) != (qty > 0.0) or abs(new_qty) > abs(qty)):
        # opens or adds: the largest |position| whose initial margin the equity after the fill covers
        # (a flip first pays the fee of closing the old side, an add only the fee of the added part)
        room = (cash + qty * fpx + side * qty * fpx * fee_rate) / (fpx * (fee_rate + 1.0 / leverage))
        if qty != 0.0 and (qty > 0.0) == (side > 0.0) and room < abs(qty):
            room = abs(qty)  # never forced to reduce by an order that asked to add
        if room < 0.0:
            room = 0.0
        if abs(new_qty) > room:
            new_qty = side * room
            delta = new_qty - qty
            if delta == 0.0:
                return cash, qty, 0.0, px, 0.0, 0.0
            if impact > 0.0 and vol_ref > 0.0:
                slip = slippage + impact * abs(delta) / vol_ref
                fpx = px * (1.0 + side * slip)
    fee = abs(delta) * fpx * fee_rate
    cash -= delta * fpx + fee
    shortfall = 0.0
    if new_qty == 0.0 and cash < 0.0:
        cut = min(fee, -cash)
        fee -= cut
        cash += cut
        shortfall = -cash
        cash = 0.0
    return cash, new_qty, delta, fpx, fee, shortfall


@nb.njit(cache=True, inline="always", error_model="numpy")
def liquidation_price(cash, qty, mmr):
    """The price at which equity ``cash + qty * p`` falls to the maintenance margin ``mmr * |qty| * p``.

    A long is liquidated at or below it, a short at or above it; a long with
    ``cash >= 0`` has a level <= 0 (never reached), a short with ``cash <= 0``
    is liquidated at any price.
    """
    return -cash / (qty - mmr * abs(qty))


@nb.njit(cache=True, error_model="numpy")
def _book_fill(tr, trades, i, qty0, qty, delta, fpx, px, fee, shortfall, reason, equity_before):
    """Trade records of one fill (single run only): entry / exit prices, size, cash flow, fees."""
    if qty0 != 0.0 and (qty == 0.0 or (qty > 0.0) != (qty0 > 0.0)):
        close_part = -qty0
        fee_close = fee * abs(close_part) / abs(delta)
        tr[TR_CF] -= close_part * fpx - shortfall
        tr[TR_FEES] += fee_close
        tr[TR_EXIT_VAL] += abs(close_part) * fpx
        tr[TR_EXIT_QTY] += abs(close_part)
        k = int(tr[TR_N])
        if k < trades.shape[0]:
            trades[k, T_ENTRY_I] = tr[TR_ENTRY_I]
            trades[k, T_EXIT_I] = i
            trades[k, T_SIDE] = _sign(qty0)
            trades[k, T_ENTRY_PX] = tr[TR_ENTRY_PX]
            trades[k, T_EXIT_PX] = tr[TR_EXIT_VAL] / tr[TR_EXIT_QTY]
            trades[k, T_SIZE] = tr[TR_SIZE]
            trades[k, T_PNL] = tr[TR_CF] - tr[TR_FEES] + tr[TR_FUNDING]
            trades[k, T_FEES] = tr[TR_FEES]
            trades[k, T_FUNDING] = tr[TR_FUNDING]
            trades[k, T_REASON] = reason
        else:
            tr[TR_OVERFLOW] = 1.0
        tr[TR_N] += 1.0
        if qty != 0.0:
            _start_trade(tr, i, qty, fpx, fee - fee_close, equity_before)
    elif qty0 == 0.0:
        _start_trade(tr, i, delta, fpx, fee, equity_before)
    else:
        tr[TR_CF] -= delta * fpx
        tr[TR_FEES] += fee
        if abs(qty) > abs(qty0):
            added = abs(delta)
            tr[TR_ENTRY_PX] = (tr[TR_ENTRY_PX] * tr[TR_ENTRY_QTY] + added * fpx) / (tr[TR_ENTRY_QTY] + added)
            tr[TR_ENTRY_QTY] += added
        else:
            tr[TR_EXIT_VAL] += abs(delta) * fpx
            tr[TR_EXIT_QTY] += abs(delta)


@nb.njit(cache=True, inline="always", error_model="numpy")
def _start_trade(tr, i, q, fpx, fee, equity_before):
    tr[TR_ENTRY_I] = i
    tr[TR_ENTRY_PX] = fpx
    tr[TR_ENTRY_QTY] = abs(q)
    tr[TR_EXIT_VAL] = 0.0
    tr[TR_EXIT_QTY] = 0.0
    tr[TR_CF] = -q * fpx
    tr[TR_FEES] = fee
    tr[TR_FUNDING] = 0.0
    tr[TR_SIZE] = abs(q) * fpx / equity_before if equity_before > 0.0 else math.nan


@nb.njit(cache=True, inline="always", error_model="numpy")
def _fill(i, delta, px, vol_ref, atr_ref, reason, fee_rate, slippage, impact, leverage, record, tr, trades, acct):
    """:func:`execute_order`, then the bookkeeping every fill needs (totals, stop reference, records).

    ``acct`` is the account as a tuple ``(cash, qty, entry_i, stop_ref, atr_entry, peak, n_trades,
    fees, turnover, shortfall)``; the updated tuple is returned.
    """
    cash, qty0, entry_i, stop_ref, atr_entry, peak, n_trades, fees, turnover, shortfall_total = acct
    equity_before = cash + qty0 * px
    cash, qty, delta, fpx, fee, shortfall = execute_order(cash, qty0, delta, px, vol_ref, fee_rate, slippage,
                                                          impact, leverage)
    if delta != 0.0:
        fees += fee
        turnover += abs(delta) * fpx
        shortfall_total += shortfall
        if record:
            _book_fill(tr, trades, i, qty0, qty, delta, fpx, px, fee, shortfall, reason, equity_before)
        closes = qty0 != 0.0 and (qty == 0.0 or (qty > 0.0) != (qty0 > 0.0))
        if closes:
            n_trades += 1.0
        if qty != 0.0 and (qty0 == 0.0 or closes):
            entry_i = float(i)
            stop_ref = px
            atr_entry = atr_ref
            peak = px
        elif qty == 0.0:
            entry_i = -1.0
    return cash, qty, entry_i, stop_ref, atr_entry, peak, n_trades, fees, turnover, shortfall_total


@nb.njit(cache=True, inline="always", error_model="numpy")
def _risk_exit(i, reason, px, vol_ref, atr_ref, fee_rate, slippage, impact, taker, leverage, record, tr, trades,
               acct, rules):
    """Close the whole position at ``px`` for a risk ``reason`` (liquidation, stop, take profit, holding time,
    weekly stop) and update the account rules.

    ``rules`` is ``(n_liquidations, liquidated, locked, locked_sign, prev_eff)``. A liquidation fills with
    the taker fee and no slippage and leaves the account flat for good; any other risk exit pays the usual
    fee and slippage and locks re-entry on the signal it closed. Returns ``(acct, rules)``.
    """
    n_liq, liquidated, locked, locked_sign, prev_eff = rules
    if reason == REASON_LIQUIDATION:
        acct = _fill(i, -acct[1], px, vol_ref, atr_ref, reason, taker, 0.0, 0.0, leverage, record, tr, trades, acct)
        return acct, (n_liq + 1.0, True, locked, locked_sign, 0.0)
    acct = _fill(i, -acct[1], px, vol_ref, atr_ref, reason, fee_rate, slippage, impact, leverage, record, tr,
                 trades, acct)
    return acct, (n_liq, liquidated, True, _sign(prev_eff), 0.0)


@nb.njit(cache=True, inline="always", error_model="numpy")
def _stop_level(side, ref, atr_entry, peak, sl_pct, sl_atr, trail_atr, atr_now):
    """The stop price for the open position (NaN when no stop applies): the tightest of the set stops."""
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


@nb.njit(cache=True, inline="always", error_model="numpy")
def _effective_target(raw, week_stopped, liquidated, locked, locked_sign, scale):
    """The target after the account rules: flat after a liquidation or a weekly stop, no re-entry on the
    signal a risk exit closed, halved after the daily limit. Returns ``(target, locked)``."""
    if week_stopped or liquidated:
        raw = 0.0
    if locked:
        if _sign(raw) == locked_sign and raw != 0.0:
            raw = 0.0
        else:
            locked = False
    return raw * scale, locked


@nb.njit(cache=True, inline="always", error_model="numpy")
def _bar_loop(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params, bars_per_year,
              record, equity, position, trades, summary):
    """The backtest: events of every bar in the order the module docstring lists.

    ``record`` (a constant at each call site, so the compiler drops the other
    branch) writes the per-bar ``equity`` / ``position`` and the ``trades``;
    ``summary`` (columns ``GRID_SUMMARY``) is always accumulated. Returns the
    totals vector (``S_*``).
    """
    n = close.shape[0]
    fee_rate = params[P_FEE]
    slip = params[P_SLIPPAGE]
    impact = params[P_IMPACT]
    lev = params[P_LEVERAGE]
    taker = params[P_TAKER_FEE]
    mmr = params[P_MMR]
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
    tr = np.zeros(N_TR)
    tr[TR_ENTRY_I] = -1.0
    # the account: cash, qty, entry bar, stop reference, ATR at entry, best price since entry, trades,
    # fees, turnover, shortfall (see _fill)
    acct = (init, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    funding_total = 0.0
    n_liq = 0.0
    liquidated = False
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
    # summary accumulators
    prev = init
    peak_eq = init
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
        qty = acct[1]
        fr = funding[i]
        if qty != 0.0 and fr != 0.0:
            pay = qty * o * fr
            acct = (acct[0] - pay,) + acct[1:]
            funding_total += pay
            if record:
                tr[TR_FUNDING] -= pay
        # 3. at the open: liquidation (equity at or below the maintenance margin after the funding or a gap),
        #    then a gap through the stop / take profit, holding time, weekly stop
        if qty != 0.0:
            side = 1.0 if qty > 0.0 else -1.0
            reason = -1
            if side * (o - liquidation_price(acct[0], qty, mmr)) <= 0.0:
                reason = REASON_LIQUIDATION
            else:
                stop = math.nan
                if has_stop:
                    stop = _stop_level(side, acct[3], acct[4], acct[5], sl_pct, sl_atr, trail_atr, atr_prev)
                if stop == stop and side * (o - stop) <= 0.0:
                    reason = REASON_STOP_LOSS
                elif tp > 0.0 and side * (o - acct[3] * (1.0 + side * tp)) >= 0.0:
                    reason = REASON_TAKE_PROFIT
                elif max_hold > 0.0 and i - acct[2] >= max_hold:
                    reason = REASON_MAX_HOLD
                elif week_stopped:
                    reason = REASON_WEEKLY_STOP
            if reason >= 0:
                acct, rules = _risk_exit(i, reason, o, vol_prev, atr_prev, fee_rate, slip, impact, taker, lev, record,
                                         tr, trades, acct, (n_liq, liquidated, locked, locked_sign, prev_eff))
                n_liq, liquidated, locked, locked_sign, prev_eff = rules
        # 4. next-open execution of the previous bar's target
        if not exec_close:
            eff, locked = _effective_target(target[i - 1] if i > 0 else 0.0, week_stopped, liquidated, locked,
                                            locked_sign, scale)
            if eff != prev_eff:
                prev_eff = eff
                qty = acct[1]
                delta = -qty if eff == 0.0 else eff * (acct[0] + qty * o) / o - qty
                acct = _fill(i, delta, o, vol_prev, atr_prev, REASON_SIGNAL, fee_rate, slip, impact, lev, record, tr, trades,
                             acct)
        # 5. intrabar: liquidation or stop (whichever the adverse move reaches first), then take profit
        qty = acct[1]
        if qty != 0.0:
            side = 1.0 if qty > 0.0 else -1.0
            adverse = low[i] if side > 0.0 else high[i]
            favour = high[i] if side > 0.0 else low[i]
            stop = math.nan
            if has_stop:
                stop = _stop_level(side, acct[3], acct[4], acct[5], sl_pct, sl_atr, trail_atr, atr_prev)
            liq = liquidation_price(acct[0], qty, mmr)
            reason = -1
            px = 0.0
            if side * (adverse - liq) <= 0.0 and not (stop == stop and side * (stop - liq) > 0.0):
                reason = REASON_LIQUIDATION
                px = liq
            elif stop == stop and side * (adverse - stop) <= 0.0:
                reason = REASON_STOP_LOSS
                px = stop
            elif tp > 0.0:
                tp_px = acct[3] * (1.0 + side * tp)
                if side * (favour - tp_px) >= 0.0:
                    reason = REASON_TAKE_PROFIT
                    px = tp_px
            if reason == REASON_LIQUIDATION or reason == REASON_STOP_LOSS:
                if side * (o - px) < 0.0:  # never better than the open
                    px = o
            if reason >= 0:
                acct, rules = _risk_exit(i, reason, px, vol_prev, atr_prev, fee_rate, slip, impact, taker, lev, record,
                                         tr, trades, acct, (n_liq, liquidated, locked, locked_sign, prev_eff))
                n_liq, liquidated, locked, locked_sign, prev_eff = rules
            elif side > 0.0:
                if high[i] > acct[5]:
                    acct = acct[:5] + (high[i],) + acct[6:]
            elif low[i] < acct[5]:
                acct = acct[:5] + (low[i],) + acct[6:]
        # 6. close execution of this bar's target; a position the close fill leaves at or below its
        #    maintenance margin is liquidated at the close
        c = close[i]
        if exec_close:
            eff, locked = _effective_target(target[i], week_stopped, liquidated, locked, locked_sign, scale)
            if eff != prev_eff:
                prev_eff = eff
                qty = acct[1]
                delta = -qty if eff == 0.0 else eff * (acct[0] + qty * c) / c - qty
                acct = _fill(i, delta, c, volume[i], atr[i], REASON_SIGNAL, fee_rate, slip, impact, lev, record, tr, trades,
                             acct)
                qty = acct[1]
                if qty != 0.0 and _sign(qty) * (c - liquidation_price(acct[0], qty, mmr)) <= 0.0:
                    acct, rules = _risk_exit(i, REASON_LIQUIDATION, c, volume[i], atr[i], fee_rate, slip, impact,
                                             taker, lev, record, tr, trades, acct,
                                             (n_liq, liquidated, locked, locked_sign, prev_eff))
                    n_liq, liquidated, locked, locked_sign, prev_eff = rules
        # 7. mark to market, summary accumulators
        eq = acct[0] + acct[1] * c
        notional = acct[1] * c
        if record:
            equity[i] = eq
            position[i] = notional / eq if eq != 0.0 else 0.0
        if abs(notional) > 1e-200 and abs(eq) < 1e100 and eq != 0.0:
            exposed += 1  # |notional / eq| > 1e-300: nonzero
        elif eq != 0.0 and notional / eq != 0.0:
            exposed += 1
        last_eq = eq
        if daily_dd > 0.0 and eq < day_start * (1.0 - daily_dd):
            scale = 0.5
        if weekly_dd > 0.0 and eq < week_start * (1.0 - weekly_dd):
            week_stopped = True
        r = eq / prev - 1.0 if prev != 0.0 else 0.0  # nothing left: no return
        acc += r
        acc2 += r * r
        prev = eq
        if eq > peak_eq:
            peak_eq = eq
        # dd = eq / peak - 1 can only beat mdd when eq is near or below peak * (1 + mdd)
        if not (eq > peak_eq * (1.0 + mdd) + 1e-9 * peak_eq * (1.0 + abs(1.0 + mdd))):
            dd = eq / peak_eq - 1.0
            if dd < mdd:
                mdd = dd
    cash, qty, entry_i, stop_ref, atr_entry, peak_px, n_trades, fees, turnover, shortfall = acct
    # the trade still open at the end: marked at the last close, no exit fill
    if qty != 0.0:
        if record:
            k = int(tr[TR_N])
            if k < trades.shape[0]:
                c = close[n - 1]
                trades[k, T_ENTRY_I] = tr[TR_ENTRY_I]
                trades[k, T_EXIT_I] = n - 1
                trades[k, T_SIDE] = _sign(qty)
                trades[k, T_ENTRY_PX] = tr[TR_ENTRY_PX]
                trades[k, T_EXIT_PX] = c
                trades[k, T_SIZE] = tr[TR_SIZE]
                trades[k, T_PNL] = tr[TR_CF] + qty * c - tr[TR_FEES] + tr[TR_FUNDING]
                trades[k, T_FEES] = tr[TR_FEES]
                trades[k, T_FUNDING] = tr[TR_FUNDING]
                trades[k, T_REASON] = REASON_OPEN
            else:
                tr[TR_OVERFLOW] = 1.0
        n_trades += 1.0
    mean = acc / n
    var = (acc2 - n * mean * mean) / (n - 1) if n > 1 else 0.0
    summary[0] = prev / init - 1.0
    summary[1] = mean / math.sqrt(var) * math.sqrt(bars_per_year) if var > 0.0 else math.nan
    summary[2] = mdd
    summary[3] = n_trades
    summary[4] = fees
    summary[5] = funding_total
    summary[6] = turnover
    summary[7] = exposed / n
    summary[8] = n_liq
    s = np.zeros(N_STATE)
    s[S_CASH] = cash
    s[S_QTY] = qty
    s[S_N_TRADES] = n_trades
    s[S_FEES_TOTAL] = fees
    s[S_FUNDING_TOTAL] = funding_total
    s[S_TURNOVER] = turnover
    s[S_OVERFLOW] = tr[TR_OVERFLOW]
    s[S_N_LIQUIDATIONS] = n_liq
    s[S_SHORTFALL] = shortfall
    return s


@nb.njit(cache=True, error_model="numpy")
def simulate(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params, bars_per_year,
             equity, position, trades, summary):
    """One backtest with per-bar equity / position (fraction at the close) and trade records."""
    return _bar_loop(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params,
                     bars_per_year, True, equity, position, trades, summary)


@nb.njit(cache=True, error_model="numpy")
def _summary_run(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params, bars_per_year,
                 summary):
    """One grid configuration: the same loop as :func:`simulate` (bit for bit), summary only."""
    empty = np.empty(0)
    _bar_loop(open_, high, low, close, volume, atr, funding, day_id, week_id, target, params, bars_per_year,
              False, empty, empty, np.empty((0, N_TRADE_COLS)), summary)


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
    p[P_TAKER_FEE] = costs.taker_fee
    p[P_MMR] = costs.maintenance_margin_rate
    p[P_LEVERAGE] = risk.max_leverage
    if risk.max_leverage * costs.maintenance_margin_rate >= 1.0:
        raise ValueError(f"RiskRules.max_leverage={risk.max_leverage!r} with maintenance_margin_rate="
                         f"{costs.maintenance_margin_rate!r}: a position at that leverage starts below its "
                         f"maintenance margin; use a leverage below {1.0 / costs.maintenance_margin_rate:g}")
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
    n_liquidations: int = 0  # 0 or 1: the account stays flat after a liquidation
    liquidation_shortfall: float = 0.0  # loss past zero equity taken by the exchange (gaps past the level)
    summary: np.ndarray | None = None  # GRID_SUMMARY columns, as the grid computes them (bit for bit)

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
                 initial_equity: float = 10_000.0, bars_per_year: float = 8760.0) -> BacktestResult:
    """One backtest of ``target`` (signed fraction of equity per bar) on prepared candle arrays.

    With ``execution="next_open"`` the target of bar ``t`` (from a signal known
    when bar ``t`` closes) is traded at the open of bar ``t + 1``; with
    ``"close"`` at the close of bar ``t``. ``bars_per_year`` only annualises
    the Sharpe ratio of ``BacktestResult.summary``.
    """
    from pipeline.core.costs import CostModel
    from pipeline.backtest.risk import RiskRules

    costs = costs or CostModel()
    risk = risk or RiskRules()
    n = inputs.close.shape[0]
    tgt = _as_array("target", target, n)
    _first_bad("target", tgt, ~np.isfinite(tgt), inputs.ts_ms, "is not a finite target position")
    params = engine_params(costs, risk, execution, initial_equity)
    equity = np.empty(n)
    position = np.empty(n)
    summary = np.empty(len(GRID_SUMMARY))
    capacity = max(1024, n // 8)
    while True:
        trades = np.empty((capacity, N_TRADE_COLS))
        s = simulate(inputs.open, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.atr,
                     inputs.funding, inputs.day_id, inputs.week_id, tgt, params, float(bars_per_year), equity,
                     position, trades, summary)
        if s[S_OVERFLOW] == 0.0:
            break
        capacity = int(s[S_N_TRADES]) + 1
    return BacktestResult(
        ts_ms=inputs.ts_ms, equity=equity, position=position, trades=trades[: int(s[S_N_TRADES])].copy(),
        initial_equity=float(initial_equity), fees_paid=float(s[S_FEES_TOTAL]),
        funding_paid=float(s[S_FUNDING_TOTAL]), turnover=float(s[S_TURNOVER]), close=inputs.close,
        n_liquidations=int(s[S_N_LIQUIDATIONS]), liquidation_shortfall=float(s[S_SHORTFALL]), summary=summary,
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


def run_grid(inputs: EngineInputs, p_down, p_up, configs: np.ndarray, bars_per_year: float, costs=None,
             confidence=None, min_confidence: float = 0.0, kelly_payoff: float = 1.0, half_kelly: bool = True,
             kelly_cap: float = 0.25, daily_drawdown_limit: float = 0.0, weekly_drawdown_limit: float = 0.0,
             execution: str = "next_open", initial_equity: float = 10_000.0,
             max_leverage: float = 1.0) -> np.ndarray:
    """Summaries (columns ``GRID_SUMMARY``) of many (threshold × sizing × stop) configurations.

    ``configs`` has one row per configuration with columns ``G_*``: threshold,
    sizing code (0 fixed, 1 confidence, 2 kelly), fraction, stop loss %, stop
    loss ATR k, trailing ATR k, take profit %, max holding bars. The candle
    arrays are shared by all runs; configurations run in parallel threads. Each
    row equals ``run_backtest(...).summary`` of the same configuration bit for bit.
    """
    from pipeline.core.costs import CostModel
    from pipeline.backtest.risk import RiskRules
    from pipeline.core.positions import _check_probability

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
                                          weekly_drawdown_limit=weekly_drawdown_limit, max_leverage=max_leverage),
                         execution, initial_equity)
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
