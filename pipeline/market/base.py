"""What every market source provides, and the one error type for bad market data."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import polars as pl


class MarketDataError(ValueError):
    """Bad or unavailable market data. The message names the source, file/line, symbol or ts at fault."""


class MarketSource(Protocol):
    """A source of market data. Every method returns a frame conforming to pipeline.market.schemas.

    Ranges are half-open ``[start, end)`` over ``ts`` (naive UTC datetimes).
    Candles are closed candles only: a candle whose close time is after "now"
    is never returned.
    """

    name: str

    def candles(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """CANDLE_SCHEMA rows, oldest first, unique ts on the interval grid."""
        ...

    def funding(self, symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """FUNDING_SCHEMA rows (settlements in range), oldest first; empty where the market has none."""
        ...

    def open_interest(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """OPEN_INTEREST_SCHEMA rows, oldest first; empty where unavailable."""
        ...

    def orderbook(self, symbol: str, start: dt.datetime, end: dt.datetime, levels: int = 5) -> pl.DataFrame:
        """ORDERBOOK_SCHEMA snapshots with ts in range, oldest first; empty where unavailable."""
        ...


def utc_naive(value: dt.datetime | dt.date) -> dt.datetime:
    """A naive UTC datetime from a date, naive datetime (taken as UTC) or aware datetime."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value
    return dt.datetime(value.year, value.month, value.day)


def to_ms(value: dt.datetime) -> int:
    """Epoch milliseconds of a naive-UTC (or aware) datetime."""
    return int(utc_naive(value).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).replace(tzinfo=None)


class SourceUnavailable(MarketDataError):
    """A transient failure (network, rate limit, server error) after the source's own retries; worth retrying later."""
