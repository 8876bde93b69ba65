"""Settings: defaults, environment overrides, clear errors."""

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.core.timegrid import bars_per_year, interval_ms


def test_environment_overrides_defaults():
    s = Settings.from_env(
        {
            "DATA_DIR": "/tmp/x",
            "CONVTRADE_SYMBOLS": "BTCUSDT, ETHUSDT",
            "CONVTRADE_INTERVALS": "60,240",
            "CONVTRADE_SEED": "11",
            "CONVTRADE_PLANTED_PATTERN": "true",
            "CONVTRADE_TAKER_FEE": "0.0006",
        }
    )
    assert s.data_dir == Path("/tmp/x") and s.warehouse_path == Path("/tmp/x/warehouse.duckdb")
    assert s.symbols == ("BTCUSDT", "ETHUSDT") and s.intervals == ("60", "240")
    assert s.seed == 11 and s.planted_pattern is True and s.taker_fee == 0.0006
    assert Settings.from_env({"CONVTRADE_DATA_DIR": "/a", "DATA_DIR": "/b"}).data_dir == Path("/a")
    assert Settings.from_env({}, symbols="SOLUSDT").symbols == ("SOLUSDT",)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CONVTRADE_INTERVALS": "61"}, "unknown interval '61'"),
        ({"CONVTRADE_SEED": "x"}, "CONVTRADE_SEED='x' is not an integer"),
        ({"CONVTRADE_START": "2025-13-01"}, "CONVTRADE_START"),
        ({"CONVTRADE_SYMBOLS": " , "}, "CONVTRADE_SYMBOLS is empty"),
        ({"CONVTRADE_PLANTED_PATTERN": "maybe"}, "not a boolean"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "name, raw",
    [("CONVTRADE_TAKER_FEE", "-1"), ("CONVTRADE_MAKER_FEE", "nan"), ("CONVTRADE_SLIPPAGE_BPS", "-0.5"),
     ("CONVTRADE_TAKER_FEE", "inf")],
)
def test_bad_costs_fail_when_the_settings_are_built(name, raw):
    """The cost model's rule (CostModel), applied to the settings: before any work, naming the variable."""
    with pytest.raises(ValueError, match=rf"^{name}=.*must be a finite number >= 0"):
        Settings.from_env({name: raw})
    field = name.removeprefix("CONVTRADE_").lower()
    with pytest.raises(ValueError, match=name):
        Settings(**{field: float(raw)})  # direct construction too (run config, tests)
    assert Settings.from_env({name: "0"})  # zero costs are allowed


def test_year_is_365_days():
    assert bars_per_year("60") == 8760
    assert bars_per_year("240") == 2190
    assert interval_ms("W") == 7 * 86_400_000


@pytest.mark.parametrize("env, message", [
    ({"CONVTRADE_EPOCHS": "0"}, "CONVTRADE_EPOCHS=0: must be >= 1"),
    ({"CONVTRADE_VALIDATION_FRACTION": "1.5"}, "CONVTRADE_VALIDATION_FRACTION=1.5: must be in (0, 1)"),
    ({"CONVTRADE_LEARNING_RATE": "-0.1"}, "CONVTRADE_LEARNING_RATE=-0.1: must be > 0"),
    ({"CONVTRADE_CLASS_WEIGHTING": "inverse"}, "CONVTRADE_CLASS_WEIGHTING='inverse': use one of balanced, focal"),
    ({"CONVTRADE_AUGMENT": "jitter,mixup"}, "unknown mixup"),
])
def test_training_settings_are_checked_when_built(env, message):
    with pytest.raises(ValueError) as info:
        Settings.from_env(env)
    assert message in str(info.value)


def test_replay_clock_is_the_pipelines_now_and_is_checked():
    import datetime as dt

    replay = Settings.from_env({"CONVTRADE_CLOCK": "2026-02-04T00:15"})
    assert replay.now() == dt.datetime(2026, 2, 4, 0, 15, tzinfo=dt.timezone.utc)
    assert Settings(clock="2026-02-04T00:15Z").now() == replay.now()
    wall = Settings().now()
    assert wall.tzinfo is not None and abs((wall - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 60
    with pytest.raises(ValueError, match="CONVTRADE_CLOCK='tomorrow' is not a UTC time"):
        Settings(clock="tomorrow")
    with pytest.raises(ValueError, match="give the time in UTC"):
        Settings(clock="2026-02-04T02:15+02:00")


def test_drift_features_name_model_inputs():
    from pipeline.core.columns import MODEL_INPUT_COLUMNS

    assert Settings().drift_columns == ["log_ret_1", "close_pos", "body_ratio"]  # the calibrated default
    assert Settings(drift_features="").drift_columns == MODEL_INPUT_COLUMNS  # empty: every model input
    assert Settings.from_env({"CONVTRADE_DRIFT_FEATURES": ""}).drift_columns == MODEL_INPUT_COLUMNS
    # model-input order whatever order they are given in
    assert Settings(drift_features="body_ratio, log_ret_1").drift_columns == ["log_ret_1", "body_ratio"]
    with pytest.raises(ValueError, match="CONVTRADE_DRIFT_FEATURES=.*: close is not a model input"):
        Settings.from_env({"CONVTRADE_DRIFT_FEATURES": "log_ret_1,close"})
