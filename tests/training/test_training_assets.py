"""Dagster: models/<architecture> assets, their blocking check, model backtests and the comparison, end to end.

The synthetic market (the offline default) for two symbols and two months (61 days) goes
through the real market and dbt assets; two architectures are trained tiny
(window 16, two folds, one epoch) by their assets, then traded and compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from assets import backtests, features, market, training
from assets.definitions import all_resources, partition_range_tags
from assets.partitions import first_partition_keys
from assets.resources import SettingsResource
from pipeline.models.catalogue import image_model_inputs, sequence_model_names
from pipeline.warehouse import Warehouse

IMAGE_MODELS = image_model_inputs()
SEQUENCE_ARCHITECTURES = sequence_model_names()

TINY = {"CONVTRADE_WINDOW": "16", "CONVTRADE_N_FOLDS": "2", "CONVTRADE_EPOCHS": "1",
        "CONVTRADE_EMBARGO_BARS": "2", "CONVTRADE_MAX_TRAIN_WINDOWS": "1500", "CONVTRADE_BATCH_SIZE": "128",
        "CONVTRADE_MODEL_VARIANT": "default"}
ARCHS = ("tcn", "wavenet")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    for key, value in TINY.items():
        mp.setenv(key, value)
    resources = all_resources(SettingsResource(data_dir=str(data_dir), symbols="BTCUSDT,ETHUSDT"))
    keys = first_partition_keys(60)  # two months
    partitioned = [market.raw_candles, market.raw_funding, features.feature_models]
    assert dg.materialize(partitioned, resources=resources, tags=partition_range_tags(keys[0], keys[-1])).success
    models = [a for a in training.MODEL_ASSETS if a.key.path[1] in ARCHS]
    checks = [c for c in training.MODEL_CHECKS if next(iter(c.check_keys)).asset_key.path[1] in ARCHS]
    downstream = [backtests.backtest_baselines, backtests.backtest_models, backtests.backtest_comparison]
    result = dg.materialize([*partitioned, *models, *checks, *downstream], resources=resources,
                            selection=[*models, *checks, *downstream], tags={"trigger": "schedule"})
    yield data_dir, result
    mp.undo()


def test_one_asset_per_sequence_architecture_in_the_training_pool():
    keys = [a.key.to_user_string() for a in training.MODEL_ASSETS]
    assert keys == [f"models/{a}" for a in (*SEQUENCE_ARCHITECTURES, *IMAGE_MODELS)]
    for asset in training.MODEL_ASSETS:
        spec = next(iter(asset.specs))
        assert spec.group_name == "models"
        assert asset.op.pool == "training"
        name = asset.key.path[1]
        first = f"encodings/{IMAGE_MODELS[name][1]}" if name in IMAGE_MODELS else "features/candle_features"
        assert {d.asset_key.to_user_string() for d in spec.deps} == {first, "features/labels"}
    assert len(training.MODEL_CHECKS) == len(SEQUENCE_ARCHITECTURES) + len(IMAGE_MODELS)
    assert all(next(iter(c.check_specs)).blocking for c in training.MODEL_CHECKS)


def test_unknown_trigger_tag_is_an_error():
    class Ctx:
        class run:  # noqa: N801 - mimics context.run.tags
            tags = {"trigger": "cron"}

    with pytest.raises(ValueError, match="trigger='cron' is not one of manual, schedule, drift"):
        training.run_trigger(Ctx())


def test_assets_train_check_backtest_and_compare(trained):
    data_dir, result = trained
    assert result.success
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    assert {"models/tcn", "models/wavenet", "backtest/baselines", "backtest/models", "backtest/comparison"} <= set(events)
    meta = events["models/tcn"]
    assert meta["folds"].value == 2 and meta["trigger"].value == "schedule"
    assert "| fold | scope |" in meta["fold_table"].value
    assert meta["loss_curves"].value.startswith("![loss curves](data:image/png;base64,")
    assert Path(meta["loss_curves_png"].value).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(meta["dropped_samples"].value) == {"warmup", "gap", "unknown_label"}
    assert meta["dropped_samples"].value["warmup"] > 0
    # the first version of each architecture is promoted; the metadata names it and the live refit's range
    assert meta["promoted"].value is True and "first version" in meta["promotion_reason"].value
    assert len(meta["version"].value) == 12 and " .. " in meta["live_train_range"].value
    checks = {next(iter(c.asset_key.path[1:])): c for c in result.get_asset_check_evaluations()}
    assert set(checks) == set(ARCHS)
    for arch, check in checks.items():
        assert check.metadata["duplicate_predictions"].value == 0, arch

    wh = Warehouse(data_dir / "warehouse.duckdb")
    reg = wh.query("select architecture, fold, trigger, metrics::varchar as metrics, artifact_path "
                   "from models.registry where role = 'fold' order by architecture, fold")
    assert reg["architecture"].to_list() == ["tcn", "tcn", "wavenet", "wavenet"]
    assert set(reg["trigger"]) == {"schedule"}
    for row in reg.iter_rows(named=True):
        assert (Path(row["artifact_path"]) / "weights.safetensors").exists()
        n_test = json.loads(row["metrics"])["n_test"]
        assert n_test > 0
    per_model = wh.query("select r.model_id, any_value(r.metrics::varchar) as m, count(p.ts) as n "
                         "from models.registry r left join predictions.oos p using (model_id) where r.role = 'fold' "
                         "group by 1")
    for mid, m, n in per_model.iter_rows():
        assert n == json.loads(m)["n_test"], mid  # every test sample predicted once

    live = wh.query("select architecture, version, train_end from models.live order by 1")
    assert live["architecture"].to_list() == ["tcn", "wavenet"]
    assert wh.query("select architecture, version from models.champions order by 1").rows() == live.select(
        "architecture", "version").rows()
    runs = wh.query("select strategy, symbol from backtest.runs where strategy in ('tcn', 'wavenet') order by 1, 2")
    assert runs.rows() == [("tcn", "BTCUSDT"), ("tcn", "ETHUSDT"), ("wavenet", "BTCUSDT"), ("wavenet", "ETHUSDT")]
    comparison = events["backtest/comparison"]
    report = Path(comparison["report"].value)
    assert report == data_dir / "reports" / "comparison.html" and report.exists()
    table = comparison["table"].value
    for strategy in ("tcn", "wavenet", "buy_and_hold", "logistic_regression"):
        assert f"| {strategy} |" in table
    assert "| pooled |" in table
    text = report.read_text()
    assert "Architectures and baselines" in text and 'href="models/' in text and 'href="backtests/' in text
    champions = text[text.index("<h2>Champions</h2>"):].split("</table>")[0]  # the compared versions, marked
    for architecture, version in live.select("architecture", "version").rows():
        assert f"<td class='l'>{architecture}</td><td class='l'>60</td><td class='l'><b>{version}</b></td>" in champions


def test_comparison_counts_architectures_as_trials(trained):
    data_dir, _ = trained
    wh = Warehouse(data_dir / "warehouse.duckdb")
    trials = wh.query("select r.strategy, m.value from backtest.runs r join backtest.metrics m using (run_id) "
                      "where m.metric = 'dsr_trials' and r.strategy in ('tcn', 'wavenet')")
    # two architectures on each market were tried: each model's deflated Sharpe counts both, traded or not
    assert trials.height == 4 and set(trials["value"]) == {2.0}


def test_results_page_states_the_recipes_the_artifacts_recorded(trained):
    from pipeline.backtest.comparison import results_markdown, run_comparison, training_recipes
    from pipeline.config import Settings

    data_dir, _ = trained
    wh = Warehouse(data_dir / "warehouse.duckdb")
    settings = Settings(data_dir=data_dir, symbols=("BTCUSDT", "ETHUSDT"))
    recipes = training_recipes(wh)
    assert [line.split(" ")[1] for line in recipes] == ["tcn", "wavenet"]
    assert all("2 folds, window 16, 1 epochs of at most 1500 windows, batch 128" in line for line in recipes)
    page = results_markdown(run_comparison(wh, settings), settings, "make evaluate", 123.0, recipes)
    assert "make evaluate" in page and "2.0 min (123 s)" in page and "| tcn | models | BTCUSDT |" in page
