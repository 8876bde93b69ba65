"""Every indicator of ``features.candle_features``, computed exactly with polars.

One series is one (symbol, interval), in ts order. Every expression is causal:
rolling windows end at the row, exponential recursions run forward, as-of
joins look backward. So a feature at ``ts`` depends only on candles with open
time <= ``ts`` (and funding / open interest / order-book data known by then).

Recursive indicators are exact, not approximations. They follow TA-Lib's
definitions, seeds included:

* EMA(n): alpha = 2/(n+1), seeded with the simple mean of the first n values.
* Wilder smoothing (RSI, ATR): alpha = 1/n, seeded with the mean of the first
  n values (gains/losses or true ranges, which start at the second bar).
* ADX(14): +DM/-DM/TR smoothed as Wilder running sums seeded with the sum of
  the first n-1 values (TA-Lib), DX averaged over n bars, then Wilder-smoothed.
* MACD(12, 26, 9) = EMA12 - EMA26, both seeded from the start of the series;
  signal = EMA9 of MACD seeded with the mean of its first 9 values. This
  deliberately differs from TA-Lib's MACD, which seeds the fast EMA later so
  both EMAs start on the same bar; the difference decays as (11/13)^k and is
  below 1e-12 after ~170 bars.

A recursion is a function of the whole history, so an incremental run cannot
recompute "the last n bars" and stay exact. We recompute each series from its
first candle (a few hundred milliseconds for a year of 1m bars) and write only
the requested days; see dbt_features/models/features/candle_features.md.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import polars as pl

from pipeline.market.timegrid import bars_per_year, interval_ms
from pipeline.features.columns import HTF_FEATURES

KEYS = ("symbol", "interval", "ts")
# The staging columns compute_candle_features uses (others are dropped from its output anyway).
CANDLE_INPUT_COLUMNS = (*KEYS, "open", "high", "low", "close", "volume", "turnover", "is_after_gap")

# Base rows are flagged as warm-up until the longest base window (EMA 200) is
# seeded and both coarser timeframes have 21 closed bars.
WARMUP_BARS = 200
HTF_WARMUP_BARS = 21

# A funding rate older than one 8h funding period is stale (a settlement is missing): NULL.
FUNDING_MAX_AGE = dt.timedelta(hours=8) - dt.timedelta(microseconds=1)

# Coarser timeframes joined onto each base interval (Bybit interval codes).
COARSER_INTERVALS: dict[str, tuple[str, str]] = {
    "1": ("15", "60"),
    "3": ("15", "60"),
    "5": ("60", "240"),
    "15": ("60", "240"),
    "30": ("240", "D"),
    "60": ("240", "D"),
    "120": ("720", "D"),
    "240": ("D", "W"),
    "360": ("D", "W"),
    "720": ("D", "W"),
}
_TRUNCATE_EVERY = {"15": "15m", "60": "1h", "240": "4h", "720": "12h", "D": "1d", "W": "1w"}


# ---------------------------------------------------------------- expressions
def _idx() -> pl.Expr:
    return pl.int_range(pl.len(), dtype=pl.Int64)


def seeded_ewm(x: pl.Expr, first: int, n_seed: int, alpha: float) -> pl.Expr:
    """y[s] = mean(x[first..s]) with s = first + n_seed - 1; then y[t] = y[t-1] + alpha (x[t] - y[t-1]).

    Rows before the seed are NULL. ``x`` must be valid from ``first`` on.
    """
    seed_at = first + n_seed - 1
    idx = _idx()
    seeded = pl.when(idx < seed_at).then(None).when(idx == seed_at).then(x.rolling_mean(n_seed)).otherwise(x)
    return seeded.ewm_mean(alpha=alpha, adjust=False)


def ema(x: pl.Expr, n: int, first: int = 0) -> pl.Expr:
    """TA-Lib EMA: alpha 2/(n+1), seeded with the SMA of the first n values."""
    return seeded_ewm(x, first, n, 2.0 / (n + 1))


def wilder(x: pl.Expr, n: int, first: int = 1) -> pl.Expr:
    """Wilder's smoothing (alpha 1/n) seeded with the mean of the first n values."""
    return seeded_ewm(x, first, n, 1.0 / n)


def _div(num: pl.Expr, den: pl.Expr, when_zero: float | pl.Expr) -> pl.Expr:
    """num / den, with a stated value where den == 0 (never inf/NaN)."""
    return pl.when(den != 0).then(num / den).otherwise(when_zero)


def rsi(close: pl.Expr, n: int = 14) -> pl.Expr:
    """Wilder RSI (TA-Lib): 100 * avg_gain / (avg_gain + avg_loss); 0 when both are 0."""
    change = close.diff()
    avg_gain = wilder(pl.when(change > 0).then(change).otherwise(0.0), n)
    avg_loss = wilder(pl.when(change < 0).then(-change).otherwise(0.0), n)
    return 100.0 * _div(avg_gain, avg_gain + avg_loss, 0.0)  # ratio first: never above 100 by rounding


def true_range() -> pl.Expr:
    prev_close = pl.col("close").shift(1)
    return pl.max_horizontal(
        pl.col("high") - pl.col("low"),
        (pl.col("high") - prev_close).abs(),
        (pl.col("low") - prev_close).abs(),
    ).fill_null(strategy="zero").pipe(lambda e: pl.when(_idx() == 0).then(None).otherwise(e))


def directional_movement() -> tuple[pl.Expr, pl.Expr]:
    """(+DM, -DM) as TA-Lib defines them; NULL on the first bar."""
    up = pl.col("high") - pl.col("high").shift(1)
    down = pl.col("low").shift(1) - pl.col("low")
    plus_dm = pl.when((up > 0) & (up > down)).then(up).otherwise(0.0)
    minus_dm = pl.when((down > 0) & (down > up)).then(down).otherwise(0.0)
    first = _idx() == 0
    return (
        pl.when(first).then(None).otherwise(plus_dm),
        pl.when(first).then(None).otherwise(minus_dm),
    )


def _tema_sum_smoothing(x: pl.Expr, n: int) -> pl.Expr:
    """TA-Lib's DM/TR running sum S[t] = S[t-1] - S[t-1]/n + x[t], seeded with the sum of x[1..n-1].

    Returned divided by n (an alpha-1/n EWM); the DI ratios are unchanged by the scale.
    """
    idx = _idx()
    seed_at = n - 1
    seeded = pl.when(idx < seed_at).then(None).when(idx == seed_at).then(x.rolling_sum(n - 1) / n).otherwise(x)
    return seeded.ewm_mean(alpha=1.0 / n, adjust=False)


def with_adx(frame: pl.DataFrame, n: int = 14) -> pl.DataFrame:
    """Add +DI, -DI and ADX (Wilder, TA-Lib seeding): DI from bar n, ADX from bar 2n-1.

    Built in stages (materialised columns), so no sub-expression is evaluated twice.
    """
    plus_dm, minus_dm = directional_movement()
    idx = _idx()
    out = frame.with_columns(_pdm=plus_dm, _mdm=minus_dm, _tr=true_range())
    out = out.with_columns(
        _s_plus=_tema_sum_smoothing(pl.col("_pdm"), n),
        _s_minus=_tema_sum_smoothing(pl.col("_mdm"), n),
        _s_tr=_tema_sum_smoothing(pl.col("_tr"), n),
    )
    out = out.with_columns(
        pl.when(idx >= n).then(_div(100.0 * pl.col("_s_plus"), pl.col("_s_tr"), 0.0)).alias(f"plus_di_{n}"),
        pl.when(idx >= n).then(_div(100.0 * pl.col("_s_minus"), pl.col("_s_tr"), 0.0)).alias(f"minus_di_{n}"),
    )
    plus_di, minus_di = pl.col(f"plus_di_{n}"), pl.col(f"minus_di_{n}")
    out = out.with_columns(_dx=_div(100.0 * (plus_di - minus_di).abs(), plus_di + minus_di, 0.0))
    out = out.with_columns(seeded_ewm(pl.col("_dx"), n, n, 1.0 / n).alias(f"adx_{n}"))
    return out.drop(["_pdm", "_mdm", "_tr", "_s_plus", "_s_minus", "_s_tr", "_dx"])


# ---------------------------------------------------------------- one series
def series_features(frame: pl.DataFrame, interval: str) -> pl.DataFrame:
    """All base-interval features of one (symbol, interval) series sorted by ts."""
    annualise = math.sqrt(bars_per_year(interval))
    c, h, low, o, v = (pl.col(name) for name in ("close", "high", "low", "open", "volume"))
    hl = h - low
    log_ret = (c / c.shift(1)).log()
    typical = (h + low + c) / 3.0
    price_volume = pl.coalesce(pl.col("turnover"), typical * v)

    out = frame.with_columns(
        bar_index=_idx(),
        ret_1=c / c.shift(1) - 1.0,
        log_ret_1=log_ret,
        range_pct=hl / c,
        close_pos=_div(c - low, hl, 0.5),
        body_ratio=_div(c - o, hl, 0.0),
        _vol_sma_20=v.rolling_mean(20),
        volume_cv_20=_div(v.rolling_std(20), v.rolling_mean(20), 0.0),
        realized_vol_20=log_ret.rolling_std(20) * annualise,
        parkinson_vol_20=((h / low).log().pow(2).rolling_mean(20) / (4.0 * math.log(2.0))).sqrt() * annualise,
        rsi_14=rsi(c, 14),
        ema_9=ema(c, 9),
        ema_12=ema(c, 12),
        ema_20=ema(c, 20),
        ema_21=ema(c, 21),
        ema_26=ema(c, 26),
        ema_50=ema(c, 50),
        ema_200=ema(c, 200),
        bb_mid_20=c.rolling_mean(20),
        _bb_std_20=c.rolling_std(20, ddof=0),
        tr=true_range(),
        obv=(pl.when(_idx() == 0).then(v).otherwise(c.diff().sign() * v)).cum_sum(),
        _pv_20=price_volume.rolling_sum(20),
        _v_20=v.rolling_sum(20),
        _hh_14=h.rolling_max(14),
        _ll_14=low.rolling_min(14),
    ).pipe(with_adx, 14)
    out = out.with_columns(
        volume_ratio_20=_div(v, pl.col("_vol_sma_20"), 1.0),
        macd=pl.col("ema_12") - pl.col("ema_26"),
        bb_upper_20=pl.col("bb_mid_20") + 2.0 * pl.col("_bb_std_20"),
        bb_lower_20=pl.col("bb_mid_20") - 2.0 * pl.col("_bb_std_20"),
        atr_14=wilder(pl.col("tr"), 14),
        obv_slope_20=_div(pl.col("obv") - pl.col("obv").shift(20), pl.col("_v_20"), 0.0),
        vwap_20=_div(pl.col("_pv_20"), pl.col("_v_20"), c),
        stoch_k_14=100.0 * _div(c - pl.col("_ll_14"), pl.col("_hh_14") - pl.col("_ll_14"), 0.0),
        **{f"ema_dist_{n}": c / pl.col(f"ema_{n}") - 1.0 for n in (9, 21, 50, 200)},
    )
    out = out.with_columns(
        macd_signal=ema(pl.col("macd"), 9, first=25),
        bb_pct_b_20=_div(c - pl.col("bb_lower_20"), pl.col("bb_upper_20") - pl.col("bb_lower_20"), 0.5),
        bb_width_20=(pl.col("bb_upper_20") - pl.col("bb_lower_20")) / pl.col("bb_mid_20"),
        atr_pct_14=pl.col("atr_14") / c,
        obv_direction=pl.col("obv_slope_20").sign().cast(pl.Int8),
        vwap_dist_20=c / pl.col("vwap_20") - 1.0,
        stoch_d_3=pl.col("stoch_k_14").rolling_mean(3),
        kc_upper_20=pl.col("ema_20") + 2.0 * pl.col("atr_14"),
        kc_lower_20=pl.col("ema_20") - 2.0 * pl.col("atr_14"),
    )
    out = out.with_columns(
        macd_hist=pl.col("macd") - pl.col("macd_signal"),
        macd_pct=pl.col("macd") / c,
        macd_signal_pct=pl.col("macd_signal") / c,
        kc_pos_20=_div(c - pl.col("kc_lower_20"), pl.col("kc_upper_20") - pl.col("kc_lower_20"), 0.5),
    ).with_columns(macd_hist_pct=pl.col("macd_hist") / c)
    return out.drop([name for name in out.columns if name.startswith("_")])


def coarse_bars(frame: pl.DataFrame, base_interval: str, coarse_interval: str, prefix: str) -> pl.DataFrame:
    """Coarser bars of one series with their indicators and the ts from which each is visible.

    A coarse bar is visible on a base row only once its last base bar has
    opened (``available_from = coarse open + coarse length - base length``),
    i.e. once every base candle in it is known. Columns are named ``prefix + name``.
    """
    coarse_ms = interval_ms(coarse_interval)
    base_ms = interval_ms(base_interval)
    bars = (
        frame.group_by(pl.col("ts").dt.truncate(_TRUNCATE_EVERY[coarse_interval]).alias("_coarse_ts"), maintain_order=True)
        .agg(pl.col("close").last())
        .sort("_coarse_ts")
    )
    annualise = math.sqrt(bars_per_year(coarse_interval))
    c = pl.col("close")
    log_ret = (c / c.shift(1)).log()
    return bars.select(
        pl.col("_coarse_ts") + pl.duration(milliseconds=coarse_ms - base_ms),
        _idx().alias(f"_{prefix}index"),
        log_ret.alias(f"{prefix}log_ret"),
        rsi(c, 14).alias(f"{prefix}rsi_14"),
        ema(c, 21).alias(f"_{prefix}ema_21"),
        (log_ret.rolling_std(20) * annualise).alias(f"{prefix}realized_vol_20"),
    ).rename({"_coarse_ts": "_available_from"})


def join_coarser(base: pl.DataFrame, frame: pl.DataFrame, interval: str) -> pl.DataFrame:
    """Join the features of the two coarser timeframes as of each base row (no look-ahead).

    ``htf{level}_ema_dist_21`` compares the base close with the coarse EMA21
    of the last closed coarse bar.
    """
    levels = COARSER_INTERVALS.get(interval)
    out = base
    htf_ready = pl.lit(True)
    for level in (1, 2):
        prefix = f"htf{level}_"
        if levels is None:
            out = out.with_columns(
                pl.lit(None, pl.String).alias(f"{prefix}interval"),
                *[pl.lit(None, pl.Float64).alias(prefix + name) for name in HTF_FEATURES],
            )
            htf_ready = pl.lit(False)
            continue
        coarse_interval = levels[level - 1]
        bars = coarse_bars(frame, interval, coarse_interval, prefix)
        out = out.join_asof(bars, left_on="ts", right_on="_available_from", strategy="backward")
        out = out.with_columns(
            pl.lit(coarse_interval).alias(f"{prefix}interval"),
            (pl.col("close") / pl.col(f"_{prefix}ema_21") - 1.0).alias(f"{prefix}ema_dist_21"),
        ).drop(["_available_from", f"_{prefix}ema_21"])
        htf_ready = htf_ready & (pl.col(f"_{prefix}index").fill_null(-1) >= HTF_WARMUP_BARS - 1)
    return out.with_columns(_htf_ready=htf_ready)


def _asof_market_structure(
    out: pl.DataFrame,
    interval: str,
    funding: pl.DataFrame | None,
    open_interest: pl.DataFrame | None,
    orderbook: pl.DataFrame | None,
) -> pl.DataFrame:
    symbol = out["symbol"][0]
    base_ms = interval_ms(interval)

    def for_symbol(frame: pl.DataFrame | None, columns: Iterable[str]) -> pl.DataFrame | None:
        if frame is None or frame.is_empty():
            return None
        part = frame.filter(pl.col("symbol") == symbol).select(["ts", *columns]).sort("ts")
        return part if part.height else None

    fund = for_symbol(funding, ["funding_rate"])
    if fund is None:
        out = out.with_columns(funding_rate=pl.lit(None, pl.Float64))
    else:
        fund = fund.rename({"ts": "_funding_ts"})
        out = out.join_asof(fund, left_on="ts", right_on="_funding_ts", strategy="backward", tolerance=FUNDING_MAX_AGE).drop(
            "_funding_ts"
        )

    oi = for_symbol(open_interest, ["open_interest"])
    if oi is None:
        out = out.with_columns(oi_log_change=pl.lit(None, pl.Float64))
    else:
        oi = oi.rename({"ts": "_oi_ts"})
        out = (
            out.join_asof(oi, left_on="ts", right_on="_oi_ts", strategy="backward", tolerance="1d")
            .with_columns(oi_log_change=(pl.col("open_interest") / pl.col("open_interest").shift(1)).log())
            .drop(["_oi_ts", "open_interest"])
        )

    book = for_symbol(orderbook, ["ob_spread_bps", "ob_top_imbalance", "ob_depth_imbalance_5"])
    if book is None:
        out = out.with_columns(
            ob_spread_bps=pl.lit(None, pl.Float64),
            ob_top_imbalance=pl.lit(None, pl.Float64),
            ob_depth_imbalance_5=pl.lit(None, pl.Float64),
        )
    else:
        # the last snapshot taken while the bar was open: ts <= snapshot < ts + interval
        book = book.rename({"ts": "_book_ts"})
        last_us = pl.col("ts") + pl.duration(microseconds=base_ms * 1000 - 1)
        out = (
            out.with_columns(_bar_last=last_us)
            .join_asof(
                book,
                left_on="_bar_last",
                right_on="_book_ts",
                strategy="backward",
                tolerance=f"{base_ms * 1000 - 1}us",
            )
            .drop(["_bar_last", "_book_ts"])
        )
    return out


OUTPUT_FIRST = ["symbol", "interval", "ts", "bar_index", "is_warmup", "is_after_gap"]


def compute_candle_features(
    candles: pl.DataFrame,
    funding: pl.DataFrame | None = None,
    open_interest: pl.DataFrame | None = None,
    orderbook: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``features.candle_features`` for every (symbol, interval) in ``candles``.

    ``candles``: symbol, interval, ts, open, high, low, close, volume, turnover
    (nullable), optionally is_after_gap; one row per key. ``funding``: symbol,
    ts, funding_rate. ``open_interest``: symbol, ts, open_interest.
    ``orderbook``: symbol, ts, ob_spread_bps, ob_top_imbalance,
    ob_depth_imbalance_5 (see stg_orderbook).
    """
    missing = [c for c in ("symbol", "interval", "ts", "open", "high", "low", "close", "volume") if c not in candles.columns]
    if missing:
        raise ValueError(f"candles frame lacks column(s) {', '.join(missing)}; have {', '.join(candles.columns)}")
    if "turnover" not in candles.columns:
        candles = candles.with_columns(turnover=pl.lit(None, pl.Float64))
    if "is_after_gap" not in candles.columns:
        candles = candles.with_columns(is_after_gap=pl.lit(False))
    candles = candles.with_columns(pl.col("ts").cast(pl.Datetime("us")), pl.col("turnover").cast(pl.Float64))
    frames = []
    for (symbol, interval), series in candles.sort(KEYS).group_by(["symbol", "interval"], maintain_order=True):
        dupes = series.filter(pl.col("ts").is_duplicated())
        if dupes.height:
            raise ValueError(
                f"candles for {symbol} {interval}: duplicate ts {dupes['ts'][0]} (deduplicate in stg_candles first)"
            )
        interval_ms(interval)  # clear error on an unknown interval code
        out = series_features(series, interval)
        out = join_coarser(out, series, interval)
        out = _asof_market_structure(out, interval, funding, open_interest, orderbook)
        out = out.with_columns(
            is_warmup=(pl.col("bar_index") < WARMUP_BARS - 1) | ~pl.col("_htf_ready"),
        )
        frames.append(out)
    if not frames:
        return empty_candle_features()
    result = pl.concat(frames, how="vertical")
    passthrough = [c for c in candles.columns if c not in OUTPUT_FIRST]  # inputs (OHLCV, source, ...) are not features
    drop = passthrough + [c for c in result.columns if c.startswith("_")]
    result = result.drop([c for c in drop if c in result.columns])
    return result.select(OUTPUT_FIRST + [c for c in result.columns if c not in OUTPUT_FIRST])


def features_for_window(
    candles: pl.DataFrame,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    funding: pl.DataFrame | None = None,
    open_interest: pl.DataFrame | None = None,
    orderbook: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The rows of compute_candle_features with ``start <= ts < end`` (a bound of None: open).

    Only series with a candle in the window are computed, each over its whole
    history (recursions need it), so the rows equal those of a full build.
    Bounds are datetimes or 'YYYY-MM-DD HH:MM:SS' strings (UTC, naive).
    """
    in_window = pl.lit(True)
    for bound, keep in ((start, pl.Expr.__ge__), (end, pl.Expr.__lt__)):
        if bound is None or bound == "":
            continue
        try:
            value = dt.datetime.fromisoformat(bound) if isinstance(bound, str) else bound
        except ValueError:
            raise ValueError(f"window bound {bound!r} is not a timestamp like '2025-01-01 00:00:00'") from None
        in_window = in_window & keep(pl.col("ts"), pl.lit(value, pl.Datetime("us")))
    if start in (None, "") and end in (None, ""):
        return compute_candle_features(candles, funding, open_interest, orderbook)
    series = candles.filter(in_window).select("symbol", "interval").unique()
    if series.is_empty():
        return empty_candle_features()
    if series.height < candles.select("symbol", "interval").n_unique():
        candles = candles.join(series, on=["symbol", "interval"], how="semi", maintain_order="left")
    return compute_candle_features(candles, funding, open_interest, orderbook).filter(in_window)


def empty_candle_features() -> pl.DataFrame:
    """The output schema with no rows (a model run over an empty warehouse)."""
    one = pl.DataFrame({"symbol": ["X"], "interval": ["60"]}).with_columns(
        ts=pl.lit(0).cast(pl.Datetime("us")), open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0
    )
    return compute_candle_features(one).clear()
