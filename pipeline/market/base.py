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

    def unavailable(self, dataset: str, symbol: str, interval: str | None = None) -> str | None:
        """Why the source has no ``dataset`` ("funding", "open_interest", "orderbook") for ``symbol`` at
        all, or None when it may have some. Ingest skips an unavailable dataset at once and keeps what is
        stored. Optional: a source without this method is asked for every dataset."""
        ...


class SourceUnavailable(MarketDataError):
    """A transient failure (network, rate limit, server error) after the source's own retries; worth retrying later."""
