"""Dagster: the dbt feature assets and their checks, materialized for partitions on a temp warehouse."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl

from assets import features as feature_assets
from assets.partitions import market_partitions
from pipeline.features.candle_features import compute_candle_features
from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.quality.features_suite import validate_model_inputs
from assets.definitions import all_resources
from assets.resources import SettingsResource


def test_assets_keys_groups_lineage_and_checks():
    specs = {spec.key.to_user_string(): spec for spec in feature_assets.feature_models.specs}
    assert set(specs) == {
        "staging/stg_candles",
        "staging/stg_funding",
        "staging/stg_open_interest",
        "staging/stg_orderbook",
        "features/candle_features",
        "features/labels",
    }
    assert specs["features/candle_features"].group_name == "features"
    assert specs["features/labels"].group_name == "labels"
    assert specs["staging/stg_candles"].group_name == "staging"
    assert {d.asset_key.to_user_string() for d in specs["staging/stg_candles"].deps} == {"raw/candles"}
    assert {d.asset_key.to_user_string() for d in specs["staging/stg_orderbook"].deps} == {"raw/orderbook"}
    check_assets = {key.asset_key.to_user_string() for key in feature_assets.feature_models.check_keys}
    assert {"features/candle_features", "features/labels", "staging/stg_candles"} <= check_assets


def test_materialize_two_partitions(helpers, tmp_path):
    keys = market_partitions.get_partition_keys()[:2]
    windows = [market_partitions.time_window_for_partition_key(k) for k in keys]
    days = [(w.end - w.start).days for w in windows]
    first = dt.datetime.fromisoformat(keys[0])
    candles = pl.concat(
        [
            helpers["random_walk"](symbol, first - dt.timedelta(days=30), 24 * (30 + sum(days)), "60", seed=seed)
            for seed, symbol in enumerate(("BTCUSDT", "ETHUSDT"))
        ]
    )
    warehouse = helpers["load_candles"](tmp_path / "warehouse.duckdb", candles)
    resources = all_resources(SettingsResource(data_dir=str(warehouse.path.parent)))
    for key, n_days in zip(keys, days):
        result = dg.materialize(
            [feature_assets.feature_models, feature_assets.candle_features_expectations],
            partition_key=key,
            resources=resources,
        )
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"features/candle_features", "features/labels"} <= materialized
        checks = result.get_asset_check_evaluations()
        assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
        names = {c.check_name for c in checks}
        assert {
            "candle_features_unique_key",
            "candle_features_model_inputs_finite_after_warmup",
            "candle_features_value_ranges",
            "labels_unique_key",
            "labels_direction_accepted",
        } <= names
        gx = [c for c in checks if c.check_name == "model_inputs_expectations"]
        assert len(gx) == 1 and gx[0].metadata["rows_checked"].value == 48 * n_days  # the month, two symbols
        assert gx[0].metadata["days_checked"].value == 2 * n_days

    per_day = warehouse.query(
        "select cast(ts as date) as day, count(*) as n from features.candle_features group by 1 order by 1"
    )
    assert per_day["n"].max() == 48 and per_day.height == 30 + sum(days)


def test_suite_names_the_bad_column(helpers):
    candles = helpers["random_walk"]("BTCUSDT", dt.datetime(2024, 1, 1), 24 * 30, "60", seed=1)
    features = compute_candle_features(candles)
    daily = pl.DataFrame({"symbol": ["BTCUSDT"], "interval": ["60"], "day": [dt.date(2024, 1, 29)],
                          "feature_rows": [24], "candle_rows": [24]})
    assert validate_model_inputs(features, daily).success
    warm = features.filter(~pl.col("is_warmup"))["ts"]
    broken = features.with_columns(
        rsi_14=pl.when(pl.col("ts") == warm[3]).then(140.0).otherwise(pl.col("rsi_14")),
        vwap_dist_20=pl.when(pl.col("ts") == warm[5]).then(float("inf")).otherwise(pl.col("vwap_dist_20")),
        adx_14=pl.when(pl.col("ts") == warm[7]).then(float("nan")).otherwise(pl.col("adx_14")),
    )
    outcome = validate_model_inputs(broken, daily.with_columns(candle_rows=pl.lit(23)))
    assert not outcome.success
    failed = {(f["expectation"], f["columns"]) for f in outcome.failures}
    assert ("expect_column_values_to_be_between", "rsi_14") in failed
    assert ("expect_column_values_to_be_between", "vwap_dist_20") in failed
    assert ("expect_column_values_to_not_be_null", "adx_14") in failed
    assert any(c == "feature_rows, candle_rows" for _, c in failed)
    assert len(MODEL_INPUT_COLUMNS) == len(set(MODEL_INPUT_COLUMNS))
