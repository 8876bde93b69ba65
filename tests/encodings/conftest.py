"""A small synthetic warehouse built through the market assets (shared by the asset and store tests)."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from assets.partitions import first_partition_keys
from assets.resources import SettingsResource, default_resources


def synthetic_market(folder, days: int, market_assets: list) -> dict:
    """Resources over ``folder`` after materializing ``market_assets`` over the first monthly
    partitions that hold ``days`` days (so at least ``days`` days)."""
    resources = default_resources(SettingsResource(data_dir=str(folder), source="synthetic",
                                                   symbols="BTCUSDT,ETHUSDT"))
    keys = first_partition_keys(days)
    result = dg.materialize(market_assets, resources=resources,
                            tags={"dagster/asset_partition_range_start": keys[0],
                                  "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    return resources


@pytest.fixture(scope="session")
def make_synthetic_market():
    """:func:`synthetic_market`, as a fixture (test modules cannot import conftest under importlib mode)."""
    return synthetic_market


def store_labels(wh) -> pl.DataFrame:
    """features.labels rows (horizon 1) from raw.candles, shaped like the dbt model's (it is not under test here)."""
    candles = wh.query("select symbol, interval, ts, close from raw.candles order by symbol, ts")
    labels = candles.with_columns(
        fwd_return=(pl.col("close").shift(-1).over("symbol") / pl.col("close")).log(),
        horizon=pl.lit(1, pl.Int32),
    ).with_columns(
        direction=pl.when(pl.col("fwd_return").is_null()).then(None).otherwise(pl.col("fwd_return").sign())
        .cast(pl.Int32),
        fwd_volatility=pl.col("fwd_return").abs(),
    ).drop("close")
    with wh.connect() as con:
        con.execute("create schema if not exists features")
        con.register("labels_in", labels)
        con.execute("create or replace table features.labels as select * from labels_in")
    return labels


@pytest.fixture(scope="session")
def make_labels():
    """:func:`store_labels`, as a fixture."""
    return store_labels
