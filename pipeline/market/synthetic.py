"""The synthetic market: the offline default source.

A seeded, deterministic market of several correlated symbols, built on a
1-minute path:

* Student-t shocks (fat tails) correlated across symbols through one common
  factor, scaled by a GARCH(1,1) variance (volatility clustering);
* a three-state Markov regime (calm up-trend, choppy, stressed down-trend)
  that moves drift and volatility;
* volume that rises with volatility and follows a daily cycle; turnover is
  volume times the bar's average price;
* OHLC built from the minute sub-steps, so every coarser candle is the exact
  aggregate of the minute path (high >= max(open, close) by construction);
* funding every 8 hours from the premium of recent returns, open interest
  and hourly top-N order-book snapshots around the price at that instant;
* optionally a planted pattern for tests: the drift of each hour carries the
  sign of the previous hour's return, a signal a working model must find;
* optionally a planted regime change (``regime_shift``): from a chosen day on,
  the chosen symbols' shocks are scaled and their price drifts, the kind of
  break a drift monitor must catch.

Each day's random draws come from a generator seeded by (seed, day), so
extending the end date never changes a bar that was already produced, and a
partition computed alone equals the same day in a long run. Generation starts
at ``origin`` (the settings' start date), where prices begin at fixed levels.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import numba
import numpy as np
import polars as pl

from pipeline.core.timegrid import DAY_MS, grid_offset_ms, interval_ms, to_ms, utc_naive
from pipeline.market.base import MarketDataError
from pipeline.market.schemas import (
    CANDLE_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    ORDERBOOK_SCHEMA,
    empty,
)

# Where the default market begins (earlier when the settings start earlier). Fixed, so
# the same seed gives the same prices whatever the partition window.
SYNTHETIC_ORIGIN = dt.date(2024, 1, 1)
GENERATE_DAYS_STEP = 32  # generate whole blocks of days, so nearby end dates share one cached path

MINUTE_MS = 60_000
MINUTES_PER_DAY = 1440
FUNDING_EVERY_MS = 8 * 3_600_000
SNAPSHOT_EVERY_MS = 3_600_000

# Starting price, daily volatility and typical daily base volume of known symbols;
# other symbols get a generic profile derived from their name.
PROFILES: dict[str, tuple[float, float, float]] = {
    "BTCUSDT": (60_000.0, 0.030, 2.0e4),
    "ETHUSDT": (3_000.0, 0.038, 3.0e5),
    "SOLUSDT": (150.0, 0.050, 4.0e6),
    "XRPUSDT": (0.6, 0.045, 3.0e8),
    "BNBUSDT": (550.0, 0.032, 2.0e5),
}

# Regimes: (drift per day, volatility multiplier); rows of the per-minute transition matrix.
REGIME_DRIFT = np.array([0.002, 0.0, -0.004])
REGIME_VOL = np.array([0.8, 1.0, 1.8])
REGIME_STAY = np.array([1 - 1 / (14 * 1440), 1 - 1 / (10 * 1440), 1 - 1 / (4 * 1440)])


@dataclasses.dataclass(frozen=True)
class _MinutePath:
    ts_ms: np.ndarray  # (T,) minute open times
    open: np.ndarray  # (S, T)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    sigma: np.ndarray  # (S, T) per-minute volatility


@numba.njit(cache=True)
def _garch_path(shocks, regime_u, start_logp, sigma_bar, planted, alpha, beta, state):
    """Minute log-prices for all symbols over one UTC day (the block starts at 00:00).

    shocks: (S, T) unit-variance correlated fat-tailed draws.
    regime_u: (T,) uniform draws for the regime chain (shared by all symbols).
    state: float64 array [regime, var.., last innovation.., previous hour's return.., current hour's return..],
    one entry per symbol in each group, carried across days. The planted drift per minute is
    ``planted * sigma_bar / sqrt(60)``, i.e. ``planted`` hourly standard deviations over an hour.
    """
    n_sym, n = shocks.shape
    logp = np.empty((n_sym, n))
    sig = np.empty((n_sym, n))
    regime = int(state[0])
    omega = (1.0 - alpha - beta) * sigma_bar**2
    for t in range(n):
        # regime chain
        stay = REGIME_STAY[regime]
        if regime_u[t] > stay:
            # move to one of the other two states
            regime = (regime + 1 + int(regime_u[t] * 1e6) % 2) % 3
        minute_of_hour = t % 60
        for s in range(n_sym):
            var = state[1 + s]
            last_ret = state[1 + n_sym + s]
            var = omega[s] + alpha * last_ret * last_ret + beta * var
            sd = np.sqrt(var) * REGIME_VOL[regime]
            drift = REGIME_DRIFT[regime] / 1440.0
            if planted > 0.0:
                prev_hour = state[1 + 2 * n_sym + s]
                if prev_hour > 0:
                    drift += planted * sigma_bar[s] / 7.745966692414834
                elif prev_hour < 0:
                    drift -= planted * sigma_bar[s] / 7.745966692414834
            innovation = np.sqrt(var) * shocks[s, t]
            ret = drift + REGIME_VOL[regime] * innovation
            prev = start_logp[s] if t == 0 else logp[s, t - 1]
            logp[s, t] = prev + ret
            sig[s, t] = sd
            state[1 + s] = var
            state[1 + n_sym + s] = innovation
            # running return of the current hour; at the hour's end it becomes "previous hour"
            if minute_of_hour == 0:
                state[1 + 3 * n_sym + s] = 0.0
            state[1 + 3 * n_sym + s] += ret
            if minute_of_hour == 59:
                state[1 + 2 * n_sym + s] = state[1 + 3 * n_sym + s]
    state[0] = regime
    return logp, sig


def _profile(symbol: str) -> tuple[float, float, float]:
    if symbol in PROFILES:
        return PROFILES[symbol]
    h = sum(ord(c) * (i + 1) for i, c in enumerate(symbol))
    return (10.0 + h % 500, 0.03 + (h % 30) / 1000, 1e5 * (1 + h % 9))


class SyntheticSource:
    """The offline default market. Deterministic given (seed, origin, symbols, planted_pattern)."""

    name = "synthetic"

    def __init__(
        self,
        symbols: tuple[str, ...] | list[str] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        origin: dt.date | dt.datetime | str = "2025-01-01",
        seed: int = 7,
        planted_pattern: bool = False,
        now=None,
        planted_strength: float = 0.3,
        regime_shift: tuple[dt.date, tuple[str, ...]] | None = None,
        regime_shift_volatility: float = 2.0,
        regime_shift_drift: float = -0.5,
    ):
        self.symbols = tuple(symbols)
        if isinstance(origin, str):
            origin = dt.date.fromisoformat(origin)
        self.origin = utc_naive(origin).replace(hour=0, minute=0, second=0, microsecond=0)
        self.seed = int(seed)
        self.planted_pattern = bool(planted_pattern)
        self.planted_strength = float(planted_strength)
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        # (first shifted day as days since the epoch, per-symbol mask, shock factor, drift in daily sds a day)
        if regime_shift is None:
            self._shift = (-1, (False,) * len(self.symbols), 1.0, 0.0)
        else:
            day, shifted = regime_shift
            self._shift = (int(to_ms(utc_naive(day)) // DAY_MS), tuple(s in shifted for s in self.symbols),
                           float(regime_shift_volatility), float(regime_shift_drift))

    # --- the minute path -------------------------------------------------------------
    def _days_until(self, end: dt.datetime) -> int:
        """Days to generate: through ``end`` (never past now), rounded up to a block of days.

        Generating a few days more changes nothing already produced (each day has its own
        seed); bars after now are never returned.
        """
        end_ms = min(to_ms(end), to_ms(self._now()))
        days = max(0, -(-(end_ms - to_ms(self.origin)) // DAY_MS))
        return -(-days // GENERATE_DAYS_STEP) * GENERATE_DAYS_STEP

    def _path(self, end: dt.datetime) -> _MinutePath:
        return _generate(
            self.symbols,
            to_ms(self.origin),
            self.seed,
            self.planted_strength if self.planted_pattern else 0.0,
            self._days_until(end),
            self._shift,
        )

    def _symbol_index(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise MarketDataError(
                f"synthetic market has no symbol {symbol!r}; it simulates {', '.join(self.symbols)} "
                "(set CONVTRADE_SYMBOLS)"
            ) from None

    def _closed_before(self) -> int:
        return to_ms(self._now())

    # --- MarketSource ---------------------------------------------------------------------
    def candles(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        s = self._symbol_index(symbol)
        step = interval_ms(interval)
        start_ms, end_ms = max(to_ms(start), to_ms(self.origin)), to_ms(end)
        if end_ms <= start_ms:
            return empty(CANDLE_SCHEMA)
        path = self._path(utc_naive(end) + dt.timedelta(milliseconds=step))
        if path.ts_ms.size == 0:
            return empty(CANDLE_SCHEMA)
        offset = grid_offset_ms(interval)
        # only the minutes of the bars that can be returned: from the bar containing start to end
        first_bar_ms = (start_ms - offset) // step * step + offset
        lo, hi = np.searchsorted(path.ts_ms, [first_bar_ms, end_ms + step])
        ts_ms = path.ts_ms[lo:hi]
        if ts_ms.size == 0:
            return empty(CANDLE_SCHEMA)
        o, h, l, c, v = (a[s, lo:hi] for a in (path.open, path.high, path.low, path.close, path.volume))
        bar = (ts_ms - offset) // step
        starts = np.flatnonzero(np.r_[True, bar[1:] != bar[:-1]])
        bar_ts = bar[starts] * step + offset
        counts = np.diff(np.r_[starts, ts_ms.size])
        full = counts == step // MINUTE_MS
        keep = full & (bar_ts >= start_ms) & (bar_ts < end_ms) & (bar_ts + step <= self._closed_before())
        if not keep.any():
            return empty(CANDLE_SCHEMA)
        idx = starts[keep]
        last = idx + counts[keep] - 1
        high = np.maximum.reduceat(h, starts)[keep]
        low = np.minimum.reduceat(l, starts)[keep]
        volume = np.add.reduceat(v, starts)[keep]
        turnover = np.add.reduceat(v * (h + l + c) / 3.0, starts)[keep]
        return pl.DataFrame(
            {
                "symbol": symbol,
                "interval": str(interval),
                "ts": (bar_ts[keep] * 1000).astype("datetime64[us]"),
                "open": o[idx],
                "high": high,
                "low": low,
                "close": c[last],
                "volume": volume,
                "turnover": turnover,
                "source": self.name,
            },
            schema=CANDLE_SCHEMA,
        )

    def funding(self, symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Funding at 00:00, 08:00, 16:00 UTC: 0.01% base plus the premium of the last 8h, capped."""
        s = self._symbol_index(symbol)
        path = self._path(end)
        settle = self._grid(path, FUNDING_EVERY_MS, start, end, lookback=FUNDING_EVERY_MS)
        if settle.size == 0:
            return empty(FUNDING_SCHEMA)
        i_now = (settle - path.ts_ms[0]) // MINUTE_MS - 1
        i_then = np.maximum(i_now - FUNDING_EVERY_MS // MINUTE_MS, 0)
        premium = np.log(path.close[s, i_now] / path.close[s, i_then])
        rate = np.clip(0.0001 + 0.05 * premium, -0.00375, 0.00375)
        return pl.DataFrame(
            {"symbol": symbol, "ts": (settle * 1000).astype("datetime64[us]"), "funding_rate": rate, "source": self.name},
            schema=FUNDING_SCHEMA,
        )

    def open_interest(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Open interest at each bar open: a slow mean-reverting level pushed by volume."""
        s = self._symbol_index(symbol)
        step = interval_ms(interval)
        path = self._path(end)
        at = self._grid(path, step, start, end, lookback=MINUTE_MS)
        if at.size == 0:
            return empty(OPEN_INTEREST_SCHEMA)
        i = (at - path.ts_ms[0]) // MINUTE_MS - 1
        cum_volume = np.cumsum(path.volume[s])
        daily = _profile(symbol)[2]
        window = MINUTES_PER_DAY
        recent = cum_volume[i] - np.where(i >= window, cum_volume[np.maximum(i - window, 0)], 0.0)
        oi = daily * 3.0 + 0.5 * recent
        return pl.DataFrame(
            {
                "symbol": symbol,
                "interval": str(interval),
                "ts": (at * 1000).astype("datetime64[us]"),
                "open_interest": oi,
                "source": self.name,
            },
            schema=OPEN_INTEREST_SCHEMA,
        )

    def orderbook(self, symbol: str, start: dt.datetime, end: dt.datetime, levels: int = 5) -> pl.DataFrame:
        """Hourly snapshots: mid at the last traded price, spread and depth from current volatility."""
        s = self._symbol_index(symbol)
        path = self._path(end)
        at = self._grid(path, SNAPSHOT_EVERY_MS, start, end, lookback=MINUTE_MS)
        if at.size == 0:
            return empty(ORDERBOOK_SCHEMA)
        i = (at - path.ts_ms[0]) // MINUTE_MS - 1
        mid = path.close[s, i]
        sigma = path.sigma[s, i]
        noise = self._snapshot_noise(s, at, levels)
        half_spread = mid * np.maximum(0.5e-4, 0.05 * sigma)
        tick = mid * np.maximum(1e-4, 0.1 * sigma)
        k = np.arange(levels)
        bid_px = mid[:, None] - half_spread[:, None] - tick[:, None] * k
        ask_px = mid[:, None] + half_spread[:, None] + tick[:, None] * k
        base = path.volume[s, i] / 10.0 + 1e-9
        bid_sz = base[:, None] * noise[:, 0] * (1 + k)
        ask_sz = base[:, None] * noise[:, 1] * (1 + k)
        return pl.DataFrame(
            {
                "symbol": symbol,
                "ts": (at * 1000).astype("datetime64[us]"),
                "bid_px": bid_px.tolist(),
                "bid_sz": bid_sz.tolist(),
                "ask_px": ask_px.tolist(),
                "ask_sz": ask_sz.tolist(),
                "source": self.name,
            },
            schema=ORDERBOOK_SCHEMA,
        )

    def _snapshot_noise(self, s: int, at: np.ndarray, levels: int) -> np.ndarray:
        """Lognormal size noise (len(at), 2, levels), drawn per UTC day so any range gives the same snapshot."""
        per_day = DAY_MS // SNAPSHOT_EVERY_MS
        day = at // DAY_MS
        slot = (at % DAY_MS) // SNAPSHOT_EVERY_MS
        out = np.empty((at.size, 2, levels))
        for d in np.unique(day):
            rng = np.random.default_rng([self.seed, 99, s, int(d)])
            draws = rng.lognormal(0.0, 0.5, (per_day, 2, levels))
            rows = day == d
            out[rows] = draws[slot[rows]]
        return out

    def _grid(self, path: _MinutePath, step: int, start, end, lookback: int) -> np.ndarray:
        """Grid times in [start, end) with at least ``lookback`` ms of path before them, not in the future."""
        if path.ts_ms.size == 0:
            return np.empty(0, dtype=np.int64)
        lo = max(to_ms(start), int(path.ts_ms[0]) + lookback)
        hi = min(to_ms(end), int(path.ts_ms[-1]) + MINUTE_MS + 1, self._closed_before() + 1)
        first = -(-lo // step) * step
        return np.arange(first, hi, step, dtype=np.int64)


@functools.lru_cache(maxsize=4)
def _generate(symbols: tuple[str, ...], origin_ms: int, seed: int, planted: float, n_days: int,
              shift: tuple = (-1, (), 1.0, 0.0)) -> _MinutePath:
    n_sym = len(symbols)
    profiles = np.array([_profile(s) for s in symbols])
    sigma_bar = profiles[:, 1] / np.sqrt(MINUTES_PER_DAY)
    # One common factor: correlation ~0.75 between every pair of symbols.
    loading = np.full(n_sym, np.sqrt(0.75))
    idio = np.sqrt(1.0 - loading**2)
    alpha, beta = 0.02, 0.975
    state = np.zeros(1 + 4 * n_sym)
    state[1 : 1 + n_sym] = sigma_bar**2
    logp = np.log(profiles[:, 0])
    total = n_days * MINUTES_PER_DAY
    logp_all = np.empty((n_sym, total))
    sig_all = np.empty((n_sym, total))
    dof = 4.0
    t_scale = np.sqrt((dof - 2.0) / dof)
    day0 = origin_ms // DAY_MS
    for d in range(n_days):
        rng = np.random.default_rng([seed, int(day0 + d)])
        common = rng.standard_t(dof, MINUTES_PER_DAY) * t_scale
        own = rng.standard_t(dof, (n_sym, MINUTES_PER_DAY)) * t_scale
        shocks = loading[:, None] * common[None, :] + idio[:, None] * own
        regime_u = rng.random(MINUTES_PER_DAY)
        lp, sg = _garch_path(shocks, regime_u, logp, sigma_bar, planted, alpha, beta, state)
        if shift[0] >= 0 and day0 + d >= shift[0]:
            # The planted regime change: the shifted symbols' minute returns scaled by shift[2], plus a steady
            # drift of shift[3] daily standard deviations a day (the GARCH state itself stays unscaled, so the
            # shifted volatility stays stationary at shift[2] times the usual one).
            mask = np.asarray(shift[1], bool)
            steps = np.diff(lp[mask], axis=1, prepend=logp[mask][:, None])
            steps = steps * shift[2] + shift[3] * profiles[mask, 1][:, None] / MINUTES_PER_DAY
            lp[mask] = logp[mask][:, None] + np.cumsum(steps, axis=1)
            sg[mask] *= shift[2]
        sl = slice(d * MINUTES_PER_DAY, (d + 1) * MINUTES_PER_DAY)
        logp_all[:, sl] = lp
        sig_all[:, sl] = sg
        logp = lp[:, -1].copy()
    close = np.exp(logp_all)
    open_ = np.empty_like(close)
    if total:
        open_[:, 0] = profiles[:, 0]
        open_[:, 1:] = close[:, :-1]
    # Intra-minute excursions beyond the open/close, drawn per day so they are extension-stable too.
    high = np.empty_like(close)
    low = np.empty_like(close)
    for d in range(n_days):
        rng = np.random.default_rng([seed, int(day0 + d), 1])
        sl = slice(d * MINUTES_PER_DAY, (d + 1) * MINUTES_PER_DAY)
        up, down = np.abs(rng.standard_normal((2, n_sym, MINUTES_PER_DAY)))
        high[:, sl] = np.maximum(open_[:, sl], close[:, sl]) * np.exp(0.3 * sig_all[:, sl] * up)
        low[:, sl] = np.minimum(open_[:, sl], close[:, sl]) * np.exp(-0.3 * sig_all[:, sl] * down)
    minute = np.arange(total, dtype=np.int64)
    ts_ms = origin_ms + minute * MINUTE_MS
    hour_of_day = (ts_ms // 3_600_000) % 24
    cycle = 1.0 + 0.35 * np.cos(2 * np.pi * (hour_of_day - 15) / 24)
    volume = np.empty_like(close)
    for d in range(n_days):
        rng = np.random.default_rng([seed, int(day0 + d), 2])
        sl = slice(d * MINUTES_PER_DAY, (d + 1) * MINUTES_PER_DAY)
        noise = rng.lognormal(-0.125, 0.5, (n_sym, MINUTES_PER_DAY))
        rel_vol = sig_all[:, sl] / sigma_bar[:, None]
        volume[:, sl] = (profiles[:, 2:3] / MINUTES_PER_DAY) * rel_vol**1.5 * cycle[None, sl] * noise
    return _MinutePath(ts_ms, open_, high, low, close, volume, sig_all)
