"""dbt docs: every column of the feature and label tables is described (formula, window, source)."""

from __future__ import annotations

import json

from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.dbt_runner.invoke import DBT_PROJECT_DIR


def _manifest() -> dict:
    return json.loads((DBT_PROJECT_DIR / "target" / "manifest.json").read_text())


def test_every_built_column_is_described(btc_warehouse):
    nodes = {n["name"]: n for n in _manifest()["nodes"].values() if n["resource_type"] == "model"}
    for table in ("candle_features", "labels"):
        built = btc_warehouse.query(
            "select column_name from information_schema.columns where table_schema = 'features' and table_name = ?",
            [table],
        )["column_name"].to_list()
        documented = {name: col.get("description", "") for name, col in nodes[table]["columns"].items()}
        undocumented = [c for c in built if len(documented.get(c, "").strip()) < 20]
        assert not undocumented, f"{table}: columns without a description: {undocumented}"
        assert not set(documented) - set(built), f"{table}: documented columns that do not exist"
        assert len(nodes[table]["description"]) > 200
    for column in MODEL_INPUT_COLUMNS:
        assert column in nodes["candle_features"]["columns"]


def test_dbt_tests_state_the_model_inputs_and_ranges_of_the_one_python_home():
    """candle_features.yml repeats MODEL_INPUT_COLUMNS and the feature suite's ranges for dbt's own tests: the
    copies must agree with pipeline.core.columns / pipeline.quality.features_suite (the one home)."""
    import yaml

    from pipeline.quality.features_suite import FINITE, RANGES

    spec = yaml.safe_load((DBT_PROJECT_DIR / "models" / "features" / "candle_features.yml").read_text())
    model = next(m for m in spec["models"] if m["name"] == "candle_features")
    tests = {next(iter(t)): next(iter(t.values())) for t in model.get("data_tests", model.get("tests", []))
             if isinstance(t, dict)}
    assert tests["finite_after_warmup"]["arguments"]["columns"] == list(MODEL_INPUT_COLUMNS)
    dbt_ranges = tests["values_in_ranges"]["arguments"]["ranges"]
    for column, (low, high) in RANGES.items():
        assert column in dbt_ranges, f"{column}: range in the feature suite but not in the dbt test"
        d_low, d_high = (float(v) for v in dbt_ranges[column])
        assert d_low == low, column
        assert d_high == high or (high == FINITE and d_high >= FINITE), column
