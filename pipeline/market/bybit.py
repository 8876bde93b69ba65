"""Bybit v5 REST source on pybit's ``unified_trading.HTTP``: klines, funding, open interest, order book.

Klines come back from Bybit newest first, at most 1000 rows a call, as strings
``[startTime ms, open, high, low, close, volume, turnover]``; the newest row is
the candle still forming. This source pages backwards over any range, orders
rows oldest first, drops duplicates at page boundaries and the forming candle,
and returns nothing partial: a failing page raises :class:`MarketDataError`
naming the symbol and the page's time range.

Retries: pybit retries some error codes by itself (sleeping inside the call),
so the HTTP client made here keeps only pybit's recv-window retry (10002);
rate limits (retCode 10006, 10429, HTTP 429), server errors (10000, 10016,
HTTP 5xx) and network errors are retried here, with exponential backoff (and
at least until Bybit's rate-limit reset time when it sends one).

Keys: public market endpoints need none. ``BYBIT_API_KEY`` / ``BYBIT_API_SECRET``
are read from the environment for private endpoints only, handed to pybit, and
never written to logs, reprs, error messages or frames.

Order book: Bybit REST has no historic book, so :meth:`BybitSource.orderbook`
returns one snapshot taken now when ``now`` lies in ``[start, end)`` and an
empty frame for any past range.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import polars as pl
from pybit.exceptions import FailedRequestError, InvalidRequestError

from pipeline.core.choices import BYBIT_CATEGORIES
from pipeline.market.base import MarketDataError
from pipeline.core.timegrid import from_ms, grid_offset_ms, interval_ms, to_ms, utc_naive
from pipeline.market.schemas import (
    CANDLE_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    ORDERBOOK_SCHEMA,
    conform,
    empty,
)

log = logging.getLogger(__name__)

SOURCE = "bybit"
KLINE_PAGE = 1000  # Bybit's maximum ``limit`` for /v5/market/kline
FUNDING_PAGE = 200  # ... for /v5/market/funding/history
OPEN_INTEREST_PAGE = 200  # ... for /v5/market/open-interest
ORDERBOOK_MAX_LEVELS = {"linear": 500, "inverse": 500, "spot": 200}
# retCodes worth retrying: server timeout, rate limit, server error, system-level frequency protection
RETRY_RET_CODES = {10000: "server timeout", 10006: "rate limit", 10016: "server error", 10429: "rate limit"}
# HTTP statuses worth retrying (409 is pybit's code for an undecodable JSON body)
RETRY_HTTP_STATUS = {409: "bad response body", 429: "rate limit", 500: "server error", 502: "bad gateway",
                     503: "service unavailable", 504: "gateway timeout"}
MAX_BACKOFF_S = 60.0
# Open-interest intervals Bybit offers, by their length in ms.
OPEN_INTEREST_INTERVALS = {
    300_000: "5min",
    900_000: "15min",
    1_800_000: "30min",
    3_600_000: "1h",
    14_400_000: "4h",
    86_400_000: "1d",
}
OFFLINE_HINT = (
    "Check the network connection, or run offline with the default CONVTRADE_SOURCE=synthetic "
    "(or CONVTRADE_SOURCE=files with exported candles)."
)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _fmt(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%d %H:%M")


class BybitSource:
    """Market data from the Bybit v5 REST API (public endpoints).

    ``http`` is a ``pybit.unified_trading.HTTP`` or anything with the same
    ``get_kline`` / ``get_funding_rate_history`` / ``get_open_interest`` /
    ``get_orderbook`` methods (tests pass a fake). ``max_retries`` counts
    retries after the first attempt; waits are ``backoff_s * 2**k``.
    """

    name = SOURCE

    def __init__(
        self,
        category: str = "linear",
        testnet: bool = False,
        http: Any | None = None,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], dt.datetime] = _utc_now,
    ):
        if category not in BYBIT_CATEGORIES:
            raise MarketDataError(f"bybit: category {category!r} is not one of {', '.join(BYBIT_CATEGORIES)}")
        if max_retries < 0:
            raise MarketDataError(f"bybit: max_retries={max_retries} must be >= 0")
        self.category = category
        self.testnet = bool(testnet)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.now = now or _utc_now
        key = os.environ.get("BYBIT_API_KEY") or None
        secret = os.environ.get("BYBIT_API_SECRET") or None
        self.has_credentials = bool(key and secret)
        # Kept only to scrub them from any text this source emits.
        self._secrets = tuple(s for s in (key, secret) if s)
        self._http = http if http is not None else _make_http(self.testnet, key, secret)
        self.host = "api-testnet.bybit.com" if self.testnet else "api.bybit.com"

    def __repr__(self) -> str:
        credentials = "set" if self.has_credentials else "none"
        return f"BybitSource(category={self.category!r}, testnet={self.testnet}, credentials={credentials})"

    # -- MarketSource ----------------------------------------------------------------------------

    def candles(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Closed candles with open time in ``[start, end)``, oldest first."""
        step = self._interval_ms(interval)
        start_ms, end_ms = to_ms(start), to_ms(end)
        now_ms = to_ms(self.now())
        # A candle is closed when open + step <= now, so the last one opens before now - step + 1.
        stop = min(end_ms, now_ms - step + 1)
        rows: dict[int, list] = {}
        cursor = stop - 1
        offset = grid_offset_ms(interval)
        first_open = start_ms + (offset - start_ms) % step
        while cursor >= start_ms:
            # The candle opens this page can hold, for error messages.
            last_open = cursor - (cursor - offset) % step
            page_first = max(first_open, last_open - (KLINE_PAGE - 1) * step)
            what = f"klines interval {interval}, page {_fmt(page_first)} .. {_fmt(last_open)} UTC"
            params = dict(
                category=self.category,
                symbol=symbol,
                interval=str(interval),
                start=start_ms,
                end=cursor,
                limit=KLINE_PAGE,
            )
            result = self._call("get_kline", symbol, what, params)
            page = [self._kline_row(row, symbol, what) for row in (result.get("list") or [])]
            if not page:
                break
            oldest = min(row[0] for row in page)
            for row in page:  # ``< stop`` also drops the forming candle Bybit sends as the newest row
                if start_ms <= row[0] < stop:
                    rows.setdefault(row[0], row)
            if oldest <= start_ms or len(page) < KLINE_PAGE:
                break
            if oldest > cursor:
                raise self._error(
                    symbol, what, f"paging made no progress (oldest row {_fmt(oldest)} is after the requested end)"
                )
            cursor = oldest - 1
        ordered = [rows[ts] for ts in sorted(rows)]
        columns = list(zip(*ordered)) if ordered else [[] for _ in range(7)]
        frame = pl.DataFrame(
            {
                "ts": pl.Series(columns[0], dtype=pl.Int64),
                **{
                    name: pl.Series(columns[i + 1], dtype=pl.Float64)
                    for i, name in enumerate(("open", "high", "low", "close", "volume", "turnover"))
                },
            }
        )
        frame = frame.with_columns(
            pl.from_epoch("ts", time_unit="ms").cast(pl.Datetime("us")).alias("ts"),
            pl.lit(symbol).alias("symbol"),
            pl.lit(str(interval)).alias("interval"),
            pl.lit(SOURCE).alias("source"),
        )
        return conform(frame, CANDLE_SCHEMA, f"bybit {symbol} candles")

    def funding(self, symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Funding settlements in ``[start, end)``; empty for spot, which has no funding."""
        if self.category == "spot":
            return empty(FUNDING_SCHEMA)
        start_ms, end_ms = to_ms(start), to_ms(end)
        cursor = min(end_ms, to_ms(self.now()) + 1) - 1
        rates: dict[int, float] = {}
        while cursor >= start_ms:
            what = f"funding history up to {_fmt(cursor)} UTC"
            params = dict(
                category=self.category, symbol=symbol, startTime=start_ms, endTime=cursor, limit=FUNDING_PAGE
            )
            result = self._call("get_funding_rate_history", symbol, what, params)
            page = [
                (self._int(item, "fundingRateTimestamp", symbol, what), self._float(item, "fundingRate", symbol, what))
                for item in (result.get("list") or [])
            ]
            if not page:
                break
            for ts, rate in page:
                if start_ms <= ts < end_ms:
                    rates.setdefault(ts, rate)
            oldest = min(ts for ts, _ in page)
            if oldest <= start_ms or len(page) < FUNDING_PAGE:
                break
            if oldest > cursor:
                raise self._error(symbol, what, "paging made no progress")
            cursor = oldest - 1
        frame = pl.DataFrame(
            {"ts": pl.Series(sorted(rates), dtype=pl.Int64), "funding_rate": [rates[t] for t in sorted(rates)]},
            schema={"ts": pl.Int64, "funding_rate": pl.Float64},
        )
        frame = frame.with_columns(
            pl.from_epoch("ts", time_unit="ms").cast(pl.Datetime("us")).alias("ts"),
            pl.lit(symbol).alias("symbol"),
            pl.lit(SOURCE).alias("source"),
        )
        return conform(frame, FUNDING_SCHEMA, f"bybit {symbol} funding")

    def open_interest(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Open interest on the candle grid in ``[start, end)``.

        Bybit offers 5min/15min/30min/1h/4h/1d; the longest of those that
        divides the candle interval is fetched and sampled on the candle grid
        (e.g. 2h from 1h, W from 1d). Empty for spot and for 1m/3m candles.
        """
        step = self._interval_ms(interval)
        if self.category == "spot":
            return empty(OPEN_INTEREST_SCHEMA)
        fits = [ms for ms in OPEN_INTEREST_INTERVALS if step % ms == 0]
        if not fits:
            log.info("bybit: no open-interest interval fits candle interval %s; returning none", interval)
            return empty(OPEN_INTEREST_SCHEMA)
        interval_time = OPEN_INTEREST_INTERVALS[max(fits)]
        start_ms, end_ms = to_ms(start), to_ms(end)
        offset = grid_offset_ms(interval)
        values: dict[int, float] = {}
        cursor: str | None = None
        seen: set[str] = set()
        pages = 0
        while end_ms > start_ms:
            pages += 1
            what = f"open interest {interval_time}, {_fmt(start_ms)} .. {_fmt(end_ms)} UTC, page {pages}"
            params = dict(
                category=self.category,
                symbol=symbol,
                intervalTime=interval_time,
                startTime=start_ms,
                endTime=end_ms - 1,
                limit=OPEN_INTEREST_PAGE,
            )
            if cursor:
                params["cursor"] = cursor
            result = self._call("get_open_interest", symbol, what, params)
            for item in result.get("list") or []:
                ts = self._int(item, "timestamp", symbol, what)
                if start_ms <= ts < end_ms and (ts - offset) % step == 0:
                    values.setdefault(ts, self._float(item, "openInterest", symbol, what))
            cursor = result.get("nextPageCursor") or None
            if not cursor or not result.get("list"):
                break
            if cursor in seen:
                raise self._error(symbol, what, "the page cursor repeated; paging stopped")
            seen.add(cursor)
        order = sorted(values)
        frame = pl.DataFrame(
            {"ts": order, "open_interest": [values[t] for t in order]},
            schema={"ts": pl.Int64, "open_interest": pl.Float64},
        )
        frame = frame.with_columns(
            pl.from_epoch("ts", time_unit="ms").cast(pl.Datetime("us")).alias("ts"),
            pl.lit(symbol).alias("symbol"),
            pl.lit(str(interval)).alias("interval"),
            pl.lit(SOURCE).alias("source"),
        )
        return conform(frame, OPEN_INTEREST_SCHEMA, f"bybit {symbol} open interest")

    def orderbook(self, symbol: str, start: dt.datetime, end: dt.datetime, levels: int = 5) -> pl.DataFrame:
        """One top-``levels`` snapshot taken now, if now is in ``[start, end)``; else empty.

        Bybit REST serves only the current book, so a past range always gives
        an empty frame (collect snapshots on a schedule to build history).
        """
        limit = ORDERBOOK_MAX_LEVELS[self.category]
        if not 1 <= levels <= limit:
            raise MarketDataError(f"bybit {self.category}: levels={levels}; the order book offers 1..{limit}")
        now = utc_naive(self.now())
        lo, hi = utc_naive(start), utc_naive(end)
        if not lo <= now < hi:
            return empty(ORDERBOOK_SCHEMA)
        what = f"order book top {levels}"
        result = self._call("get_orderbook", symbol, what, dict(category=self.category, symbol=symbol, limit=levels))
        ts = self._int(result, "ts", symbol, what)
        bids = self._levels(result.get("b"), symbol, what, levels)
        asks = self._levels(result.get("a"), symbol, what, levels)
        bids.sort(key=lambda level: -level[0])
        asks.sort(key=lambda level: level[0])
        frame = pl.DataFrame(
            {
                "symbol": [symbol],
                "ts": [from_ms(ts)],
                "bid_px": [[p for p, _ in bids]],
                "bid_sz": [[s for _, s in bids]],
                "ask_px": [[p for p, _ in asks]],
                "ask_sz": [[s for _, s in asks]],
                "source": [SOURCE],
            },
            schema=ORDERBOOK_SCHEMA,
        )
        return conform(frame.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)), ORDERBOOK_SCHEMA, "bybit order book")

    # -- calling Bybit -----------------------------------------------------------------------------

    def _call(self, method: str, symbol: str, what: str, params: dict) -> dict:
        """``http.<method>(**params)['result']``, retrying transient failures; else MarketDataError."""
        attempt = 0
        while True:
            reset_ms = None
            try:
                response = getattr(self._http, method)(**params)
                if isinstance(response, tuple):  # pybit with record_request_time / return_response_headers
                    response = response[0]
                code = response.get("retCode", 0)
                if code:  # pybit raises for these itself; a client that does not still gets the same handling
                    raise InvalidRequestError(
                        request=method, message=str(response.get("retMsg", "")), status_code=code, time="",
                        resp_headers=None,
                    )
                result = response.get("result")
                if not isinstance(result, dict):
                    raise self._error(symbol, what, "the response has no result object")
                return result
            except InvalidRequestError as exc:
                code = exc.status_code
                retry = code in RETRY_RET_CODES
                reason = f"Bybit retCode {code} ({RETRY_RET_CODES.get(code, 'request rejected')}): {exc.message}"
                reset_ms = _reset_ms(exc.resp_headers)
                network = False
            except FailedRequestError as exc:
                code = exc.status_code
                retry = code in RETRY_HTTP_STATUS
                reason = f"HTTP {code} ({RETRY_HTTP_STATUS.get(code, 'request failed')}): {exc.message}"
                if code == 403:
                    reason += " Bybit answers 403 when the IP is rate-limited or in a blocked region."
                reset_ms = _reset_ms(exc.resp_headers)
                network = False
            except OSError as exc:  # requests' ConnectionError, Timeout and SSLError are OSErrors
                retry = True
                reason = f"{type(exc).__name__}: {exc}"
                network = True
            if not retry or attempt >= self.max_retries:
                break
            delay = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
            if reset_ms is not None:
                delay = min(max(delay, (reset_ms - to_ms(self.now())) / 1000), MAX_BACKOFF_S)
            attempt += 1
            log.warning(
                "%s",
                self._scrub(f"bybit {symbol} {what}: {reason}; retry {attempt}/{self.max_retries} in {delay:.1f}s"),
            )
            self.sleep(delay)
        # Raised outside the except blocks so no pybit/requests exception rides along as __context__.
        tries = f"after {attempt + 1} attempt{'s' if attempt else ''}"
        head = f"bybit {self.category} {symbol}: {what}"
        if network:
            message = f"{head}: cannot reach Bybit at {self.host} {tries} ({reason}). {OFFLINE_HINT}"
        elif retry:
            message = f"{head}: failed {tries}: {reason}. Nothing was returned for this range; try again later."
        elif code == 10001 or "symbol" in reason.lower():
            message = (
                f"{head}: Bybit rejected the request: {reason}. Check that {symbol!r} is a {self.category} "
                f"symbol on Bybit (e.g. BTCUSDT) and that the category ({', '.join(BYBIT_CATEGORIES)}) is right."
            )
        else:
            message = f"{head}: Bybit rejected the request: {reason}."
        raise MarketDataError(self._scrub(message))

    # -- parsing -------------------------------------------------------------------------------------

    def _kline_row(self, row: Any, symbol: str, what: str) -> list:
        try:
            if len(row) < 7:
                raise ValueError(f"{len(row)} fields")
            return [int(row[0]), *(float(x) for x in row[1:7])]
        except (TypeError, ValueError) as exc:
            raise self._error(
                symbol,
                what,
                f"malformed kline row {row!r} ({exc}); expected [startTime, open, high, low, close, volume, turnover]",
            ) from None

    def _int(self, item: dict, key: str, symbol: str, what: str) -> int:
        try:
            return int(item[key])
        except (KeyError, TypeError, ValueError):
            raise self._error(symbol, what, f"bad {key!r} in {item!r}") from None

    def _float(self, item: dict, key: str, symbol: str, what: str) -> float:
        try:
            return float(item[key])
        except (KeyError, TypeError, ValueError):
            raise self._error(symbol, what, f"bad {key!r} in {item!r}") from None

    def _levels(self, side: Any, symbol: str, what: str, levels: int) -> list[tuple[float, float]]:
        try:
            return [(float(px), float(sz)) for px, sz in list(side or [])[:levels]]
        except (TypeError, ValueError):
            raise self._error(symbol, what, f"malformed book side {side!r}") from None

    def _interval_ms(self, interval: str) -> int:
        try:
            return interval_ms(interval)
        except ValueError as exc:
            raise MarketDataError(f"bybit: {exc}") from None

    def _error(self, symbol: str, what: str, problem: str) -> MarketDataError:
        return MarketDataError(self._scrub(f"bybit {self.category} {symbol}: {what}: {problem}"))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _reset_ms(headers: Any) -> int | None:
    """Bybit's rate-limit reset time (epoch ms) from response headers, if it sent one."""
    if not headers:
        return None
    try:
        value = headers.get("X-Bapi-Limit-Reset-Timestamp")
        return int(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _make_http(testnet: bool, key: str | None, secret: str | None):
    """A pybit HTTP client that leaves rate-limit retries to BybitSource (pybit keeps only 10002)."""
    from pybit.unified_trading import HTTP

    return HTTP(testnet=testnet, api_key=key, api_secret=secret, retry_codes={10002}, timeout=10, log_requests=False)


__all__ = ["BybitSource", "OFFLINE_HINT"]
