"""Bybit source against recorded v5 response shapes (tests/market/recorded/) and a fake exchange.

No network: the fake answers like Bybit (newest first, ``limit`` rows, the
``start``/``end`` window inclusive) and fails the way pybit does (it raises
InvalidRequestError for a non-zero retCode, FailedRequestError for an HTTP
status, requests' ConnectionError for the network).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import polars as pl
import pytest
import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError

from pipeline.market.base import MarketDataError
from pipeline.core.timegrid import from_ms, to_ms
from pipeline.market.bybit import BybitSource
from pipeline.market.schemas import CANDLE_SCHEMA, FUNDING_SCHEMA, OPEN_INTEREST_SCHEMA, ORDERBOOK_SCHEMA

RECORDED = Path(__file__).parent / "recorded"
HOUR = 3_600_000
T0 = to_ms(dt.datetime(2024, 1, 1))
STEPS = {"1": 60_000, "60": HOUR, "240": 4 * HOUR, "D": 24 * HOUR, "W": 7 * 24 * HOUR}


def recorded(name: str) -> dict:
    return json.loads((RECORDED / name).read_text())


def pybit_error(response: dict, headers: dict | None = None) -> InvalidRequestError:
    """What pybit raises for a non-zero retCode (see pybit _handle_response)."""
    return InvalidRequestError(
        request="GET https://api.bybit.com/v5/market/kline: category=linear",
        message=response["retMsg"],
        status_code=response["retCode"],
        time="12:00:00",
        resp_headers=headers or {},
    )


def http_error(status: int) -> FailedRequestError:
    return FailedRequestError(
        request="GET https://api.bybit.com/v5/market/kline", message="HTTP status code is not 200.",
        status_code=status, time="12:00:00", resp_headers={},
    )


def network_error() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='api.bybit.com', port=443): Max retries exceeded "
        "(Caused by NameResolutionError: Failed to resolve 'api.bybit.com')"
    )


def make_candles(n: int, step: int = HOUR, t0: int = T0) -> list[list[str]]:
    """Bybit-shaped kline rows (strings), oldest first, with distinct values per row."""
    rows = []
    for i in range(n):
        o = 100 + i * 0.5
        c = o + (0.25 if i % 3 else -0.25)
        rows.append([str(t0 + i * step), str(o), str(max(o, c) + 1), str(min(o, c) - 1), str(c), str(10 + i), str(1000 + i)])
    return rows


class FakeExchange:
    """Answers the four market endpoints like Bybit v5; ``failures[k]`` replaces the k-th call (1-based)."""

    def __init__(self, candles=(), step=HOUR, overlap=0, failures=None, funding=(), oi_pages=None, book=None):
        self.candles = list(candles)
        self.step = step
        self.overlap = overlap  # extra newer rows per page, like a boundary that repeats
        self.failures = dict(failures or {})
        self.funding_rows = list(funding)
        self.oi_pages = oi_pages or {}
        self.book = book
        self.calls: list[tuple[str, dict]] = []

    def _enter(self, method: str, params: dict):
        self.calls.append((method, params))
        failure = self.failures.get(len(self.calls))
        if isinstance(failure, BaseException):
            raise failure
        if isinstance(failure, dict):
            return failure
        return None

    def get_kline(self, **params):
        scripted = self._enter("get_kline", params)
        if scripted is not None:
            return scripted
        assert 1 <= params["limit"] <= 1000
        hi = params["end"] + self.overlap * self.step
        rows = [r for r in self.candles if params["start"] <= int(r[0]) <= hi]
        page = list(reversed(rows))[: params["limit"]]
        return {"retCode": 0, "retMsg": "OK", "result": {"symbol": params["symbol"], "category": params["category"],
                                                          "list": page}, "retExtInfo": {}, "time": 0}

    def get_funding_rate_history(self, **params):
        scripted = self._enter("get_funding_rate_history", params)
        if scripted is not None:
            return scripted
        assert 1 <= params["limit"] <= 200
        rows = [r for r in self.funding_rows if params["startTime"] <= int(r["fundingRateTimestamp"]) <= params["endTime"]]
        page = list(reversed(rows))[: params["limit"]]
        return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": page}, "retExtInfo": {}, "time": 0}

    def get_open_interest(self, **params):
        scripted = self._enter("get_open_interest", params)
        if scripted is not None:
            return scripted
        return self.oi_pages[params.get("cursor")]

    def get_orderbook(self, **params):
        scripted = self._enter("get_orderbook", params)
        if scripted is not None:
            return scripted
        return self.book


def source(http, now=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), **kwargs) -> tuple[BybitSource, list[float]]:
    sleeps: list[float] = []
    return BybitSource(http=http, sleep=sleeps.append, now=lambda: now, **kwargs), sleeps


def expected_frame(rows: list[list[str]], symbol: str = "BTCUSDT", interval: str = "60") -> pl.DataFrame:
    """The candle frame for Bybit rows, built independently of the source."""
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(rows),
            "interval": [interval] * len(rows),
            "ts": [from_ms(int(r[0])) for r in rows],
            **{name: [float(r[i + 1]) for r in rows] for i, name in enumerate(("open", "high", "low", "close", "volume", "turnover"))},
            "source": ["bybit"] * len(rows),
        },
        schema=CANDLE_SCHEMA,
    )


# -- klines ----------------------------------------------------------------------------------------


class Replay:
    """Returns one recorded response for every call, whatever the parameters."""

    def __init__(self, response: dict):
        self.response = response
        self.calls: list[dict] = []

    def get_kline(self, **params):
        self.calls.append(params)
        return self.response


def test_recorded_page_is_ordered_oldest_first_and_forming_candle_dropped():
    response = recorded("kline_linear_BTCUSDT_60.json")
    rows = response["result"]["list"]  # newest first; rows[0] opens 2025-12-05 23:00 and is still forming
    http = Replay(response)
    src, _ = source(http, now=dt.datetime(2025, 12, 5, 23, 10, tzinfo=dt.timezone.utc))
    frame = src.candles("BTCUSDT", "60", dt.datetime(2025, 12, 5, 17), dt.datetime(2025, 12, 6))
    assert frame.schema == pl.Schema(CANDLE_SCHEMA)
    assert frame.equals(expected_frame(list(reversed(rows[1:]))))
    assert frame["ts"][0] == dt.datetime(2025, 12, 5, 17) and frame["ts"][-1] == dt.datetime(2025, 12, 5, 22)
    assert frame["close"][-1] == 89189.6
    call = http.calls[0]
    assert (call["category"], call["symbol"], call["interval"], call["limit"]) == ("linear", "BTCUSDT", "60", 1000)
    assert call["start"] == to_ms(dt.datetime(2025, 12, 5, 17))
    assert call["end"] < to_ms(dt.datetime(2025, 12, 5, 23))  # never asks for the forming candle
    # An hour later the 23:00 candle has closed and is kept.
    src, _ = source(Replay(response), now=dt.datetime(2025, 12, 6, 0, 0, tzinfo=dt.timezone.utc))
    later = src.candles("BTCUSDT", "60", dt.datetime(2025, 12, 5, 17), dt.datetime(2025, 12, 6))
    assert later.height == 7 and later["ts"][-1] == dt.datetime(2025, 12, 5, 23)


def test_recorded_spot_daily_page():
    response = recorded("kline_spot_ETHUSDT_D.json")
    src, _ = source(Replay(response), category="spot")
    frame = src.candles("ETHUSDT", "D", dt.date(2024, 1, 1), dt.date(2024, 1, 4))
    assert frame.equals(expected_frame(list(reversed(response["result"]["list"])), "ETHUSDT", "D"))


@pytest.mark.parametrize("overlap", [0, 1])
def test_paging_over_several_pages(overlap: int):
    candles = make_candles(2500)
    http = FakeExchange(candles, overlap=overlap)
    src, _ = source(http)
    frame = src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + 2500 * HOUR))
    assert frame.equals(expected_frame(candles))  # oldest first, every candle once
    assert [m for m, _ in http.calls] == ["get_kline"] * 3
    ends = [p["end"] for _, p in http.calls]
    assert ends == sorted(ends, reverse=True)  # paging backwards
    # start and end not on the grid, half-open: candles opening in [01:30, 1000h + 00:00)
    http = FakeExchange(candles, overlap=overlap)
    part = source(http)[0].candles("BTCUSDT", "60", from_ms(T0 + HOUR + HOUR // 2), from_ms(T0 + 1000 * HOUR))
    assert part.equals(expected_frame(candles[2:1000]))


@pytest.mark.parametrize("category", ["linear", "spot", "inverse"])
@pytest.mark.parametrize("interval", ["1", "240", "D", "W"])
def test_every_interval_and_category(category: str, interval: str):
    step = STEPS[interval]
    t0 = to_ms(dt.datetime(2024, 1, 1))  # a Monday, on every grid
    candles = make_candles(30, step, t0)
    http = FakeExchange(candles, step=step)
    src, _ = source(http, category=category)
    frame = src.candles("BTCUSD" if category == "inverse" else "BTCUSDT", interval, from_ms(t0), from_ms(t0 + 30 * step))
    assert frame.height == 30 and frame["interval"].unique().to_list() == [interval]
    assert frame["ts"].diff().drop_nulls().unique().to_list() == [dt.timedelta(milliseconds=step)]
    assert {p["category"] for _, p in http.calls} == {category} and {p["interval"] for _, p in http.calls} == {interval}


def test_empty_and_inverted_ranges_make_no_bad_calls():
    http = FakeExchange(make_candles(10))
    src, _ = source(http)
    assert src.candles("BTCUSDT", "60", from_ms(T0 + 5 * HOUR), from_ms(T0 + 5 * HOUR)).height == 0
    assert src.candles("BTCUSDT", "60", from_ms(T0 + 5 * HOUR), from_ms(T0)).height == 0
    assert http.calls == []
    with pytest.raises(MarketDataError, match="unknown interval 'M'"):
        src.candles("BTCUSDT", "M", from_ms(T0), from_ms(T0 + HOUR))


def test_malformed_row_names_the_row_and_page():
    response = recorded("kline_linear_BTCUSDT_60.json")
    response["result"]["list"][2] = ["1764968400000", "89267.3", "n/a", "89027.7", "89143.4", "1449.81", "1"]
    src, _ = source(Replay(response), now=dt.datetime(2025, 12, 6, tzinfo=dt.timezone.utc))
    with pytest.raises(MarketDataError, match=r"BTCUSDT: klines interval 60, page .*malformed kline row .*'n/a'"):
        src.candles("BTCUSDT", "60", dt.datetime(2025, 12, 5, 17), dt.datetime(2025, 12, 6))


# -- failures --------------------------------------------------------------------------------------


def test_rate_limit_then_success_backs_off_exponentially(caplog):
    candles = make_candles(1500)
    failures = {1: pybit_error(recorded("error_rate_limit.json")), 2: http_error(429),
                3: pybit_error(recorded("error_server.json"))}
    http = FakeExchange(candles, failures=failures)
    src, sleeps = source(http)
    with caplog.at_level(logging.WARNING, logger="pipeline.market.bybit"):
        frame = src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + 1500 * HOUR))
    assert frame.equals(expected_frame(candles))
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(http.calls) == 5  # 3 failures, then 2 pages
    assert "retCode 10006" in caplog.text and "retry 1/5" in caplog.text


def test_rate_limit_waits_for_the_reset_time_bybit_sends():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    reset = {"X-Bapi-Limit-Reset-Timestamp": str(to_ms(now) + 7_500)}
    http = FakeExchange(make_candles(5), failures={1: pybit_error(recorded("error_rate_limit.json"), reset)})
    src, sleeps = source(http, now=now)
    assert src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + 5 * HOUR)).height == 5
    assert sleeps == [7.5]


def test_retries_are_bounded():
    http = FakeExchange(make_candles(5), failures={k: pybit_error(recorded("error_rate_limit.json")) for k in range(1, 9)})
    src, sleeps = source(http, max_retries=2, backoff_s=0.5)
    with pytest.raises(MarketDataError, match=r"BTCUSDT.*failed after 3 attempts: Bybit retCode 10006 .*Too many visits"):
        src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + 5 * HOUR))
    assert sleeps == [0.5, 1.0] and len(http.calls) == 3


def test_api_error_mid_range_names_symbol_and_page_and_returns_nothing():
    candles = make_candles(2500)
    bad = {k: pybit_error(recorded("error_server.json")) for k in range(2, 10)}
    http = FakeExchange(candles, failures=bad)
    src, sleeps = source(http, max_retries=1)
    with pytest.raises(MarketDataError) as err:
        src.candles("ETHUSDT", "60", from_ms(T0), from_ms(T0 + 2500 * HOUR))
    message = str(err.value)
    # page 1 held candles 1500..2499, so page 2 covers candles 500..1499
    page = f"page {from_ms(T0 + 500 * HOUR):%Y-%m-%d %H:%M} .. {from_ms(T0 + 1499 * HOUR):%Y-%m-%d %H:%M} UTC"
    assert "bybit linear ETHUSDT" in message and page in message, message
    assert "retCode 10016" in message and "after 2 attempts" in message
    assert sleeps == [1.0]


def test_bad_symbol_is_not_retried():
    http = FakeExchange(failures={1: pybit_error(recorded("error_symbol_invalid.json"))})
    src, sleeps = source(http)
    with pytest.raises(MarketDataError, match=r"BTCUSDTX: .*Bybit rejected the request: .*params error: symbol invalid.*Check that 'BTCUSDTX' is a linear symbol") as err:
        src.candles("BTCUSDTX", "60", from_ms(T0), from_ms(T0 + HOUR))
    assert "retCode 10001" in str(err.value)
    assert sleeps == [] and len(http.calls) == 1


def test_unreachable_network_says_so_and_names_the_offline_default():
    http = FakeExchange(failures={k: network_error() for k in range(1, 10)})
    src, sleeps = source(http, max_retries=3)
    with pytest.raises(MarketDataError, match=r"cannot reach Bybit at api\.bybit\.com after 4 attempts") as err:
        src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + HOUR))
    assert "CONVTRADE_SOURCE=synthetic" in str(err.value)
    assert sleeps == [1.0, 2.0, 4.0]
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_non_retryable_http_status_fails_at_once():
    http = FakeExchange(failures={1: http_error(403)})
    src, sleeps = source(http)
    with pytest.raises(MarketDataError, match=r"HTTP 403 .*rate-limited or in a blocked region"):
        src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + HOUR))
    assert sleeps == []


# -- secrets ---------------------------------------------------------------------------------------

KEY, SECRET = "kEy1234567890abcd", "sEcReT0987654321zyxw"


def test_secrets_never_leak_into_repr_errors_logs_or_frames(monkeypatch, caplog):
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
    leaky = InvalidRequestError(
        request=f"GET /v5/market/kline: api_key={KEY}&sign={SECRET}", message=f"Too many visits! key {KEY}",
        status_code=10006, time="12:00:00", resp_headers={},
    )
    candles = make_candles(3)
    http = FakeExchange(candles, failures={1: leaky, 2: leaky, 3: leaky})
    src, _ = source(http, max_retries=1)
    assert src.has_credentials
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(MarketDataError) as err:
            src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + 3 * HOUR))
        frame = src.candles("BTCUSDT", "60", from_ms(T0), from_ms(T0 + 3 * HOUR))
    texts = [repr(src), str(src), str(err.value), repr(err.value), caplog.text, str(frame.rows()), str(frame)]
    assert "Too many visits" in str(err.value)  # the message is kept, only the secrets are scrubbed
    for text in texts:
        assert KEY not in text and SECRET not in text
    assert err.value.__context__ is None  # the leaky pybit exception is not chained


def fake_response(body: dict, status: int = 200, headers: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers.update(headers or {})
    response.url = "https://api.bybit.com/v5/market/kline"
    return response


def test_real_pybit_client_leaves_retries_to_the_source_and_sends_no_keys(monkeypatch, caplog):
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
    import pybit._http_manager

    def no_pybit_sleep(seconds):
        raise AssertionError(f"pybit slept {seconds}s itself")

    monkeypatch.setattr(pybit._http_manager.time, "sleep", no_pybit_sleep)
    sleeps: list[float] = []
    src = BybitSource(sleep=sleeps.append, now=lambda: dt.datetime(2025, 12, 5, 23, 10, tzinfo=dt.timezone.utc))
    assert "sEcReT" not in repr(src)
    answers = [fake_response(recorded("error_rate_limit.json")), fake_response({}, status=429),
               fake_response(recorded("kline_linear_BTCUSDT_60.json"))]
    sent: list[requests.PreparedRequest] = []

    def send(request, timeout=None):
        sent.append(request)
        return answers.pop(0)

    monkeypatch.setattr(src._http.client, "send", send)
    with caplog.at_level(logging.DEBUG):
        frame = src.candles("BTCUSDT", "60", dt.datetime(2025, 12, 5, 17), dt.datetime(2025, 12, 6))
    assert frame.height == 6 and frame["ts"].is_sorted()
    assert sleeps == [1.0, 2.0] and len(sent) == 3
    assert "/v5/market/kline?" in sent[0].url and "interval=60" in sent[0].url and "limit=1000" in sent[0].url
    for request in sent:  # public endpoints are not signed: the key never goes on the wire
        assert KEY not in str(request.headers) and KEY not in request.url
    assert KEY not in caplog.text and SECRET not in caplog.text

    def unreachable(request, timeout=None):
        raise network_error()

    monkeypatch.setattr(src._http.client, "send", unreachable)
    with pytest.raises(MarketDataError, match="cannot reach Bybit.*CONVTRADE_SOURCE=synthetic"):
        src.candles("BTCUSDT", "60", dt.datetime(2025, 12, 5, 17), dt.datetime(2025, 12, 6))


# -- funding, open interest, order book ----------------------------------------------------------------


def test_recorded_funding_page_and_paging():
    response = recorded("funding_linear_BTCUSDT.json")
    src, _ = source(FakeExchange(funding=reversed(response["result"]["list"])))
    frame = src.funding("BTCUSDT", dt.datetime(2023, 12, 31), dt.datetime(2024, 1, 1))
    assert frame.schema == pl.Schema(FUNDING_SCHEMA)
    assert frame["ts"].to_list() == [dt.datetime(2023, 12, 31, h) for h in (0, 8, 16)]
    assert frame["funding_rate"].to_list() == [0.00026419, 0.00040148, 0.00044151]

    settle = 8 * HOUR
    rows = [{"symbol": "BTCUSDT", "fundingRate": str(i * 1e-6), "fundingRateTimestamp": str(T0 + i * settle)}
            for i in range(450)]
    http = FakeExchange(funding=rows)
    frame = source(http)[0].funding("BTCUSDT", from_ms(T0 + settle), from_ms(T0 + 449 * settle))
    assert frame["ts"].to_list() == [from_ms(T0 + i * settle) for i in range(1, 449)]
    assert frame["funding_rate"].to_list() == [i * 1e-6 for i in range(1, 449)]
    assert len(http.calls) == 3 and all(p["limit"] == 200 for _, p in http.calls)

    spot = FakeExchange(funding=rows)
    assert source(spot, category="spot")[0].funding("BTCUSDT", from_ms(T0), from_ms(T0 + settle)).height == 0
    assert spot.calls == []


def oi_exchange() -> FakeExchange:
    page1, page2 = recorded("open_interest_linear_BTCUSDT_1h_page1.json"), recorded("open_interest_linear_BTCUSDT_1h_page2.json")
    return FakeExchange(oi_pages={None: page1, page1["result"]["nextPageCursor"]: page2})


def test_recorded_open_interest_pages_follow_the_cursor():
    http = oi_exchange()
    frame = source(http)[0].open_interest("BTCUSDT", "60", dt.datetime(2023, 12, 31), dt.datetime(2024, 1, 2))
    assert frame.schema == pl.Schema(OPEN_INTEREST_SCHEMA)
    assert frame["ts"].to_list() == [dt.datetime(2023, 12, 31, 23)] + [dt.datetime(2024, 1, 1, h) for h in range(4)]
    assert frame["open_interest"].to_list() == [51920.81, 51987.5, 52102.733, 52290.004, 52311.218]
    assert [p.get("cursor") for _, p in http.calls] == [None, "lastid%3D35841917%26lastTime%3D1704070800000"]
    assert {p["intervalTime"] for _, p in http.calls} == {"1h"}


def test_open_interest_interval_mapping():
    http = oi_exchange()
    two_hour = source(http)[0].open_interest("BTCUSDT", "120", dt.datetime(2023, 12, 31), dt.datetime(2024, 1, 2))
    assert two_hour["ts"].to_list() == [dt.datetime(2024, 1, 1, h) for h in (0, 2)]  # 1h sampled on the 2h grid
    assert http.calls[0][1]["intervalTime"] == "1h"
    daily = FakeExchange(oi_pages={None: {"retCode": 0, "retMsg": "OK", "result": {"list": [], "nextPageCursor": ""}}})
    source(daily)[0].open_interest("BTCUSDT", "W", dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1))
    assert daily.calls[0][1]["intervalTime"] == "1d"
    four = FakeExchange(oi_pages={None: {"retCode": 0, "retMsg": "OK", "result": {"list": [], "nextPageCursor": ""}}})
    source(four)[0].open_interest("BTCUSDT", "240", dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1))
    assert four.calls[0][1]["intervalTime"] == "4h"
    none = FakeExchange()
    assert source(none)[0].open_interest("BTCUSDT", "1", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)).height == 0
    assert none.calls == []


def test_orderbook_snapshot_now_and_empty_for_history():
    response = recorded("orderbook_linear_BTCUSDT.json")
    snap_time = from_ms(response["result"]["ts"])
    http = FakeExchange(book=response)
    src, _ = source(http, now=snap_time.replace(tzinfo=dt.timezone.utc))
    book = src.orderbook("BTCUSDT", dt.datetime(2024, 7, 1), dt.datetime(2024, 7, 2), levels=5)
    assert book.schema == pl.Schema(ORDERBOOK_SCHEMA) and book.height == 1
    row = book.row(0, named=True)
    assert row["ts"] == snap_time and row["source"] == "bybit"
    assert row["bid_px"] == [62918.1, 62917.6, 62917.5, 62917.1, 62917.0]
    assert row["ask_px"] == [62918.2, 62918.3, 62918.4, 62918.5, 62918.8]
    assert row["ask_sz"][0] == 14.179 and row["bid_sz"][0] == 1.293
    assert http.calls[0][1] == {"category": "linear", "symbol": "BTCUSDT", "limit": 5}
    # Bybit REST keeps no book history: a past range is empty and costs no call.
    assert src.orderbook("BTCUSDT", dt.datetime(2024, 6, 1), dt.datetime(2024, 6, 2)).height == 0
    assert len(http.calls) == 1
    with pytest.raises(MarketDataError, match=r"levels=201; the order book offers 1\.\.200"):
        source(http, category="spot")[0].orderbook("BTCUSDT", dt.datetime(2024, 7, 1), dt.datetime(2024, 7, 2), levels=201)
