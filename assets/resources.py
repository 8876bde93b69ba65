"""Dagster resources: the warehouse, the settings, the market source.

Assets get plain-Python objects from these (``Warehouse``, ``Settings``,
a market source) and call ``pipeline.*`` with them.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipeline.config import Settings
from pipeline.warehouse import Warehouse

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SettingsResource(dg.ConfigurableResource):
    """Settings from ``CONVTRADE_*`` environment variables; any field here overrides them.

    Empty strings mean "keep the environment / default value".
    """

    data_dir: str = ""
    source: str = ""
    symbols: str = ""  # comma-separated
    intervals: str = ""  # comma-separated Bybit codes
    start: str = ""
    files_dir: str = ""
    seed: int = -1

    def settings(self) -> Settings:
        overrides: dict = {}
        for name in ("data_dir", "source", "symbols", "intervals", "start", "files_dir"):
            value = getattr(self, name)
            if value:
                overrides[name] = value
        if self.seed >= 0:
            overrides["seed"] = self.seed
        return Settings.from_env(**overrides)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file; an empty path means ``<data_dir>/warehouse.duckdb`` from the settings."""

    path: str = ""

    def warehouse(self) -> Warehouse:
        path = self.path or str(Settings.from_env().warehouse_path)
        return Warehouse(path)


def default_resources() -> dict:
    """Resources for ``defs``; tests pass their own with a temporary DATA_DIR."""
    return {
        "settings": SettingsResource(),
        "warehouse": WarehouseResource(),
    }

