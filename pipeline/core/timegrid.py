"""Time on the candle grid: interval lengths, epoch milliseconds <-> naive UTC, grid offsets, gap counts.

The one home for these; everything that converts times or asks "is this ts on
the grid, how many bars are missing" imports from here. Timestamps are naive
``datetime`` values holding UTC (the warehouse stores ``TIMESTAMP`` in UTC);
``ts`` is a candle's open time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

DAY_MS = 86_400_000

# Bybit v5 kline intervals and their length in milliseconds ("M" is calendar
# monthly and has no fixed length, so it is not supported on the candle grid).
INTERVAL_MS: dict[str, int] = {
    "1": 60_000,
    "3": 3 * 60_000,
    "5": 5 * 60_000,
    "15": 15 * 60_000,
    "30": 30 * 60_000,
    "60": 3_600_000,
    "120": 2 * 3_600_000,
    "240": 4 * 3_600_000,
    "360": 6 * 3_600_000,
    "720": 12 * 3_600_000,
    "D": DAY_MS,
    "W": 7 * DAY_MS,
}

WEEK_OFFSET_MS = 4 * DAY_MS  # Bybit weekly bars open on Monday 00:00 UTC; 1970-01-01 was a Thursday


def interval_ms(interval: str) -> int:
    """Length of one bar of a Bybit interval code, in milliseconds."""
    try:
        return INTERVAL_MS[str(interval)]
    except KeyError:
        raise ValueError(
            f"unknown interval {interval!r}: use one of the Bybit v5 codes {', '.join(INTERVAL_MS)}"
        ) from None


def grid_offset_ms(interval: str) -> int:
    """Where an interval's grid starts relative to the epoch (only weekly bars are shifted)."""
    return WEEK_OFFSET_MS if str(interval) == "W" else 0


def bars_per_year(interval: str) -> float:
    """Bars in a 365-day year (crypto trades 24/7: never 252)."""
    return 365 * DAY_MS / interval_ms(interval)


# -- naive UTC <-> epoch ms --------------------------------------------------------------------------


def utc_naive(value: dt.datetime | dt.date) -> dt.datetime:
    """A naive UTC datetime from a date, naive datetime (taken as UTC) or aware datetime."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value
    return dt.datetime(value.year, value.month, value.day)


def to_ms(value: dt.datetime | dt.date) -> int:
    """Epoch milliseconds of a naive-UTC (or aware) datetime, or of a date's midnight UTC."""
    return int(utc_naive(value).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    """The naive UTC datetime of epoch milliseconds."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).replace(tzinfo=None)


# -- the grid ----------------------------------------------------------------------------------------


def first_bar_at_or_after(ms: int, interval: str) -> int:
    """The open time (ms) of the first bar of ``interval`` that opens at or after ``ms``."""
    step, offset = interval_ms(interval), grid_offset_ms(interval)
    return -(-(ms - offset) // step) * step + offset


def closed_bars(start: dt.datetime, end: dt.datetime, interval: str, now: dt.datetime | None = None) -> int:
    """How many bars of ``interval`` open in ``[start, end)`` and have closed by ``now`` (None: by ``end``)."""
    step = interval_ms(interval)
    first = first_bar_at_or_after(to_ms(start), interval)
    end_ms = to_ms(end) if now is None else min(to_ms(end), to_ms(now) - step + 1)
    # Bars opening at first, first + step, ... strictly before end_ms (and closed by now).
    return max(0, -(-(end_ms - first) // step))


def grid_offset_expr(intervals: Sequence[str]) -> pl.Expr:
    """How far each row's ``ts`` lies off the grid of its ``interval``, in ms (0 when on it)."""
    offset = pl.lit(0, dtype=pl.Int64)
    for interval in intervals:
        step, shift = interval_ms(interval), grid_offset_ms(interval)
        offset = (
            pl.when(pl.col("interval") == interval)
            .then((pl.col("ts").dt.epoch("ms") - shift) % step)
            .otherwise(offset)
        )
    return offset


GAP_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "interval": pl.String,
    "bars": pl.Int64,
    "gaps": pl.Int64,
    "missing_bars": pl.Int64,
    "first_ts": pl.Datetime("us"),
    "last_ts": pl.Datetime("us"),
}


def count_gaps(frame: pl.DataFrame, spans: dict | None = None) -> pl.DataFrame:
    """Per (symbol, interval) in ``frame``: bars present, gaps (runs of missing grid steps) and missing
    bars (GAP_SCHEMA rows).

    Bars are expected from the series' first to its last candle in ``frame``, or over
    ``spans[(symbol, interval)] = (first, last)`` (bar open times, both included) where given, e.g.
    the series' first and last stored candle clipped to a window. The ingest metadata and the candle
    check both report this count, so they agree by construction.
    """
    rows = []
    for (symbol, interval), part in frame.sort("ts").group_by(["symbol", "interval"], maintain_order=True):
        step = interval_ms(interval)
        ts = part["ts"].dt.epoch("ms")
        if spans and (symbol, interval) in spans:
            lo, hi = (to_ms(t) for t in spans[(symbol, interval)])
            # Virtual bars just outside the span, so missing bars at either end of it count too.
            ts = pl.concat([pl.Series([lo - step]), ts.filter((ts >= lo) & (ts <= hi)), pl.Series([hi + step])])
        missing = (ts.diff().drop_nulls() // step - 1).clip(lower_bound=0)
        rows.append(
            {
                "symbol": symbol,
                "interval": interval,
                "bars": part.height,
                "gaps": int((missing > 0).sum()),
                "missing_bars": int(missing.sum()),
                "first_ts": part["ts"].min(),
                "last_ts": part["ts"].max(),
            }
        )
    return pl.DataFrame(rows, schema=GAP_SCHEMA)


def last_closed_bar(start: dt.datetime, end: dt.datetime, interval: str, now: dt.datetime | None = None):
    """Open time of the last bar of ``interval`` in ``[start, end)`` closed by ``now``; None if there is none."""
    count = closed_bars(start, end, interval, now)
    if count == 0:
        return None
    return from_ms(first_bar_at_or_after(to_ms(start), interval) + (count - 1) * interval_ms(interval))


def empty_day_ranges(
    frame: pl.DataFrame, series: Sequence[tuple[str, str]], start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> list[dict]:
    """Whole UTC days of ``[start, end)`` that are over by ``now`` and hold no candle of a series,
    merged into ranges: ``{symbol, interval, start, end, days}`` (end exclusive), oldest first."""
    first_day = utc_naive(start).date()
    if utc_naive(start) > dt.datetime.combine(first_day, dt.time()):
        first_day += dt.timedelta(days=1)
    last_day_end = min(utc_naive(end), utc_naive(now)).date()  # days strictly before this one are over
    if last_day_end <= first_day:
        return []
    ranges = []
    for symbol, interval in series:
        present = set(
            frame.filter((pl.col("symbol") == symbol) & (pl.col("interval") == interval))["ts"].dt.date().to_list()
        )
        day, run_start = first_day, None
        while day <= last_day_end:
            empty = day < last_day_end and day not in present
            if empty and run_start is None:
                run_start = day
            elif not empty and run_start is not None:
                ranges.append(
                    {"symbol": symbol, "interval": interval, "start": str(run_start), "end": str(day),
                     "days": (day - run_start).days}
                )
                run_start = None
            day += dt.timedelta(days=1)
    return ranges
