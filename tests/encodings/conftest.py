"""A small synthetic warehouse built through the market assets (shared by the asset and store tests)."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.partitions import daily_partitions
from assets.resources import SettingsResource, default_resources


def synthetic_market(folder, days: int, market_assets: list) -> dict:
    """Resources over ``folder`` after materializing ``market_assets`` for the first ``days`` daily partitions."""
    resources = default_resources(SettingsResource(data_dir=str(folder), source="synthetic",
                                                   symbols="BTCUSDT,ETHUSDT"))
    keys = daily_partitions.get_partition_keys()[:days]
    result = dg.materialize(market_assets, resources=resources,
                            tags={"dagster/asset_partition_range_start": keys[0],
                                  "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    return resources


@pytest.fixture(scope="session")
def make_synthetic_market():
    """:func:`synthetic_market`, as a fixture (test modules cannot import conftest under importlib mode)."""
    return synthetic_market
