"""The synthetic market: deterministic, extension-stable, consistent OHLC, realistic statistics."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from pipeline.market.base import MarketDataError
from pipeline.market.schemas import CANDLE_SCHEMA, FUNDING_SCHEMA, ORDERBOOK_SCHEMA
from pipeline.market.synthetic import SyntheticSource

ORIGIN = dt.datetime(2025, 1, 1)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def source(**kwargs) -> SyntheticSource:
    kwargs.setdefault("now", lambda: NOW)
    return SyntheticSource(origin=ORIGIN.date(), **kwargs)


@pytest.fixture(scope="module")
def hourly() -> pl.DataFrame:
    return source().candles("BTCUSDT", "60", ORIGIN, dt.datetime(2025, 7, 1))


def test_schema_and_grid(hourly):
    assert hourly.schema == pl.Schema(CANDLE_SCHEMA)
    ts = hourly["ts"]
    assert ts.is_sorted() and ts.n_unique() == hourly.height
    assert (ts.diff().drop_nulls() == dt.timedelta(hours=1)).all()
    assert ts.min() == ORIGIN and ts.max() == dt.datetime(2025, 6, 30, 23)


def test_ohlc_consistent_by_construction(hourly):
    o, h, l, c = (hourly[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all() and (l <= np.minimum(o, c)).all() and (l > 0).all()
    assert (hourly["volume"] > 0).all()
    vwap = hourly["turnover"] / hourly["volume"]
    assert ((vwap >= hourly["low"]) & (vwap <= hourly["high"])).all()
    # each bar opens at the previous close (a continuous 24/7 market)
    assert np.allclose(hourly["open"][1:].to_numpy(), hourly["close"][:-1].to_numpy(), rtol=0, atol=0)


def test_coarse_bars_aggregate_fine_bars(hourly):
    four = source().candles("BTCUSDT", "240", ORIGIN, dt.datetime(2025, 7, 1))
    agg = (
        hourly.group_by_dynamic("ts", every="4h")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .sort("ts")
    )
    assert four["ts"].to_list() == agg["ts"].to_list()
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(four[col].to_numpy(), agg[col].to_numpy())
    assert np.allclose(four["volume"].to_numpy(), agg["volume"].to_numpy(), rtol=1e-12)


def test_deterministic_and_seeded():
    a = source().candles("ETHUSDT", "60", ORIGIN, dt.datetime(2025, 1, 10))
    b = source().candles("ETHUSDT", "60", ORIGIN, dt.datetime(2025, 1, 10))
    c = source(seed=8).candles("ETHUSDT", "60", ORIGIN, dt.datetime(2025, 1, 10))
    assert a.equals(b)
    assert not a["close"].equals(c["close"])


def test_extending_the_end_never_moves_the_past(hourly):
    short = source().candles("BTCUSDT", "60", ORIGIN, dt.datetime(2025, 2, 1))
    assert short.equals(hourly.filter(pl.col("ts") < dt.datetime(2025, 2, 1)))
    one_day = source().candles("BTCUSDT", "60", dt.datetime(2025, 3, 5), dt.datetime(2025, 3, 6))
    assert one_day.equals(hourly.filter(pl.col("ts").dt.date() == dt.date(2025, 3, 5)))


def test_closed_candles_only():
    now = dt.datetime(2025, 1, 3, 10, 30, tzinfo=dt.timezone.utc)
    frame = source(now=lambda: now).candles("BTCUSDT", "60", ORIGIN, dt.datetime(2025, 1, 4))
    assert frame["ts"].max() == dt.datetime(2025, 1, 3, 9)  # the 10:00 candle is still forming
    daily = source(now=lambda: now).candles("BTCUSDT", "D", ORIGIN, dt.datetime(2025, 1, 4))
    assert daily["ts"].to_list() == [dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2)]


def test_market_statistics(hourly):
    r = np.diff(np.log(hourly["close"].to_numpy()))
    kurtosis = ((r - r.mean()) ** 4).mean() / r.var() ** 2
    assert kurtosis > 4, "fat tails"
    absr = np.abs(r - r.mean())
    lag1 = np.corrcoef(absr[:-1], absr[1:])[0, 1]
    assert lag1 > 0.1, "volatility clustering"
    vol_corr = np.corrcoef(absr, hourly["volume"].to_numpy()[1:])[0, 1]
    assert vol_corr > 0.2, "volume moves with volatility"
    annual_vol = r.std() * np.sqrt(8760)
    assert 0.2 < annual_vol < 1.5


def test_symbols_are_correlated():
    src = source()
    closes = [src.candles(s, "60", ORIGIN, dt.datetime(2025, 3, 1))["close"].to_numpy() for s in src.symbols]
    rets = np.diff(np.log(np.vstack(closes)), axis=1)
    corr = np.corrcoef(rets)
    off_diag = corr[~np.eye(len(closes), dtype=bool)]
    assert (off_diag > 0.5).all() and (off_diag < 0.95).all()


def test_planted_pattern_is_findable():
    plain = source().candles("BTCUSDT", "60", ORIGIN, dt.datetime(2025, 4, 1))
    planted = source(planted_pattern=True).candles("BTCUSDT", "60", ORIGIN, dt.datetime(2025, 4, 1))

    def sign_persistence(frame):
        r = np.diff(np.log(frame["close"].to_numpy()))
        return np.mean(np.sign(r[1:]) == np.sign(r[:-1]))

    assert abs(sign_persistence(plain) - 0.5) < 0.03
    assert sign_persistence(planted) > 0.56


def test_funding_orderbook_open_interest_consistent(hourly):
    src = source()
    funding = src.funding("BTCUSDT", ORIGIN, dt.datetime(2025, 2, 1))
    assert funding.schema == pl.Schema(FUNDING_SCHEMA)
    assert set(funding["ts"].dt.hour().unique().to_list()) == {0, 8, 16}
    assert funding["funding_rate"].abs().max() <= 0.00375
    book = src.orderbook("BTCUSDT", ORIGIN, dt.datetime(2025, 2, 1), levels=5)
    assert book.schema == pl.Schema(ORDERBOOK_SCHEMA)
    bids, asks = np.vstack(book["bid_px"].to_list()), np.vstack(book["ask_px"].to_list())
    assert bids.shape[1] == 5 and (np.diff(bids, axis=1) < 0).all() and (np.diff(asks, axis=1) > 0).all()
    assert (bids[:, 0] < asks[:, 0]).all(), "no crossed book"
    # the snapshot at an hour boundary sits around the close of the candle that just ended
    closes = hourly.select(pl.col("ts") + pl.duration(hours=1), "close")
    joined = book.select("ts", mid=(pl.col("bid_px").list.first() + pl.col("ask_px").list.first()) / 2).join(
        closes, on="ts"
    )
    assert joined.height > 700
    assert np.allclose(joined["mid"], joined["close"], rtol=1e-3)
    one_day = src.orderbook("BTCUSDT", dt.datetime(2025, 1, 9), dt.datetime(2025, 1, 10), levels=5)
    assert one_day.equals(book.filter(pl.col("ts").dt.date() == dt.date(2025, 1, 9)))
    oi = src.open_interest("BTCUSDT", "60", ORIGIN, dt.datetime(2025, 2, 1))
    assert oi.height > 700 and (oi["open_interest"] > 0).all()


def test_unknown_symbol_is_a_clear_error():
    with pytest.raises(MarketDataError, match="DOGEUSDT"):
        source().candles("DOGEUSDT", "60", ORIGIN, dt.datetime(2025, 1, 2))
