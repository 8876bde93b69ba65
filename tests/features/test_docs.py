"""dbt docs: every column of the feature and label tables is described (formula, window, source)."""

from __future__ import annotations

import json

from pipeline.features.columns import MODEL_INPUT_COLUMNS
from pipeline.features.dbt_cli import DBT_PROJECT_DIR


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
