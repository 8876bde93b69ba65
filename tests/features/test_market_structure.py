"""Funding and order-book columns from the real Bybit files: as-of semantics, formulas, no look-ahead."""

from __future__ import annotations

import datetime as dt

import polars as pl


def test_orderbook_features_use_the_last_snapshot_inside_the_bar(btc_warehouse, real_orderbook):
    books = real_orderbook().filter(pl.col("symbol") == "BTCUSDT").sort("ts")
    assert books.height > 5
    last = books.row(books.height - 1, named=True)  # every BTC snapshot lies in the 08:00 bar
    bid, ask = last["bid_px"][0], last["ask_px"][0]
    spread = (ask - bid) / ((ask + bid) / 2) * 1e4
    top = (last["bid_sz"][0] - last["ask_sz"][0]) / (last["bid_sz"][0] + last["ask_sz"][0])
    depth = (sum(last["bid_sz"]) - sum(last["ask_sz"])) / (sum(last["bid_sz"]) + sum(last["ask_sz"]))
    rows = btc_warehouse.query(
        "select ts, ob_spread_bps, ob_top_imbalance, ob_depth_imbalance_5 from features.candle_features "
        "where ts between '2024-07-01 06:00' and '2024-07-01 10:00' order by ts"
    )
    at = {r["ts"].hour: r for r in rows.to_dicts()}
    assert abs(at[8]["ob_spread_bps"] - spread) <= 1e-9 * spread
    assert abs(at[8]["ob_top_imbalance"] - top) <= 1e-12
    assert abs(at[8]["ob_depth_imbalance_5"] - depth) <= 1e-12
    # the 07:00 bar closed before the snapshots; the 09:00 bar opened after them
    for hour in (6, 7, 9, 10):
        assert at[hour]["ob_spread_bps"] is None


def test_funding_rate_is_the_last_settlement_at_or_before_ts(btc_warehouse, real_funding):
    funding = real_funding("BTCUSDT").sort("ts")
    features = btc_warehouse.query("select ts, funding_rate from features.candle_features order by ts")
    expected = features.select("ts").join_asof(
        funding.select("ts", ref="funding_rate", settled="ts"), on="ts", strategy="backward"
    )
    joined = features.with_columns(ref=expected["ref"], settled=expected["settled"])
    inside = joined.filter(
        (pl.col("ts") >= funding["ts"][0]) & (pl.col("ts") < funding["ts"][-1] + dt.timedelta(hours=8))
    )
    assert inside.height > 25_000
    assert (inside["funding_rate"] == inside["ref"]).all()
    # a settlement at 08:00 is not visible on the 07:00 row
    seven = joined.filter(pl.col("ts") == dt.datetime(2022, 6, 1, 7)).row(0, named=True)
    assert seven["settled"] == dt.datetime(2022, 6, 1, 0)
    # stale beyond one funding period, and absent before the first settlement
    assert joined.filter(pl.col("ts") >= funding["ts"][-1] + dt.timedelta(hours=8))["funding_rate"].is_null().all()
    assert joined.filter(pl.col("ts") < funding["ts"][0])["funding_rate"].is_null().all()
