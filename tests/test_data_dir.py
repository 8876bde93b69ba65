"""One warehouse path: ``settings.data_dir`` in a run's config moves every output, and nothing goes elsewhere."""

from pathlib import Path

import dagster as dg

from assets import backtests, features, market
from assets.definitions import all_resources, partition_range_tags
from assets.partitions import first_partition_keys


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def test_run_config_data_dir_moves_warehouse_reports_and_dbt_artifacts(tmp_path, monkeypatch):
    default_dir, chosen = tmp_path / "default", tmp_path / "chosen"
    monkeypatch.setenv("DATA_DIR", str(default_dir))
    monkeypatch.setenv("CONVTRADE_SYMBOLS", "BTCUSDT")
    keys = first_partition_keys(12)
    run_config = {"resources": {"settings": {"config": {"data_dir": str(chosen)}}}}
    partitioned = [market.raw_candles, market.raw_funding, features.feature_models]
    assert dg.materialize(partitioned, resources=all_resources(), run_config=run_config,
                          tags=partition_range_tags(keys[0], keys[-1])).success
    assert dg.materialize([*partitioned, backtests.backtest_baselines], resources=all_resources(),
                          run_config=run_config, selection=[backtests.backtest_baselines]).success
    written = files_under(chosen)
    assert "warehouse.duckdb" in written
    assert any(name.startswith("reports/") and name.endswith(".html") for name in written), sorted(written)
    assert any(name.startswith("dbt/target/") for name in written), sorted(written)
    assert files_under(default_dir) == set(), "nothing may be written under the environment's DATA_DIR"
